// An owned file descriptor (a program, a link, a namespace). close() is explicit; the
// finalizer only catches handles the caller forgot.
#include <unistd.h>
#include "kelp.h"

namespace kelp {

class FdHandle : public Napi::ObjectWrap<FdHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdHandle",
                       {InstanceAccessor<&FdHandle::GetFd>("fd"), InstanceMethod<&FdHandle::Close>("close")});
  }

  explicit FdHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdHandle>(info) {
    fd_ = info[0].As<Napi::Number>().Int32Value();
  }
  ~FdHandle() override { Release(); }

 private:
  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

  void Close(const Napi::CallbackInfo&) { Release(); }

  void Release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
};

Napi::Object NewFdHandle(Napi::Env env, int fd) {
  return Data(env).fdHandle.New({Napi::Number::New(env, fd)});
}

void InitFd(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = FdHandle::Define(env);
  Data(env).fdHandle = Napi::Persistent(cls);
  exports.Set("FdHandle", cls);
}

}  // namespace kelp
