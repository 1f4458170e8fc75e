// Network namespace switching for the calling thread. setns is per-thread, so only this (the JS)
// thread moves; the original namespace is always restored, even when the work throws. Never
// await inside: other JS would run in the wrong namespace.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include "kelp.h"

namespace kelp {

NetnsGuard::NetnsGuard(Napi::Env env, int nsFd, const std::string& what) {
  self_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self_ < 0) ThrowErrno(env, errno, "open /proc/thread-self/ns/net");
  if (setns(nsFd, CLONE_NEWNET) < 0) {
    int e = errno;
    ::close(self_);
    ThrowErrno(env, e, "setns " + what);
  }
}

NetnsGuard::~NetnsGuard() {
  // Continuing in the wrong namespace would corrupt every later operation.
  if (setns(self_, CLONE_NEWNET) < 0) abort();
  ::close(self_);
}

static Napi::Value InNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsFunction())
    throw Napi::TypeError::New(env, "inNetns(path: string, fn: () => T)");
  std::string path = info[0].As<Napi::String>();
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) ThrowErrno(env, errno, "open netns " + path);
  Napi::Value result;
  try {
    NetnsGuard guard(env, target, path);
    ::close(target);
    target = -1;
    result = info[1].As<Napi::Function>().Call({});
  } catch (...) {
    if (target >= 0) ::close(target);
    throw;
  }
  return result;
}

// The calling thread's current namespace as an owned handle (to come back to it later).
static Napi::Value CurrentNetns(const Napi::CallbackInfo& info) {
  int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), errno, "open /proc/thread-self/ns/net");
  return NewFdHandle(info.Env(), fd);
}

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("inNetns", Napi::Function::New(env, InNetns, "inNetns"));
  exports.Set("currentNetns", Napi::Function::New(env, CurrentNetns, "currentNetns"));
}

}  // namespace kelp
