// The addon's single error shape.
#include <cerrno>
#include <cstring>
#include "kelp.h"

namespace kelp {

// Linux leaks this kernel-internal code from some BPF paths (e.g. batch ops a map lacks).
static constexpr int kENOTSUPP = 524;

static const char* ErrnoName(int err) {
  switch (err) {
#define KELP_ERRNO(e) \
  case e:             \
    return #e;
    KELP_ERRNO(EPERM) KELP_ERRNO(ENOENT) KELP_ERRNO(ESRCH) KELP_ERRNO(EINTR) KELP_ERRNO(EIO)
    KELP_ERRNO(ENXIO) KELP_ERRNO(E2BIG) KELP_ERRNO(ENOEXEC) KELP_ERRNO(EBADF) KELP_ERRNO(EAGAIN)
    KELP_ERRNO(ENOMEM) KELP_ERRNO(EACCES) KELP_ERRNO(EFAULT) KELP_ERRNO(EBUSY) KELP_ERRNO(EEXIST)
    KELP_ERRNO(EXDEV) KELP_ERRNO(ENODEV) KELP_ERRNO(ENOTDIR) KELP_ERRNO(EISDIR) KELP_ERRNO(EINVAL)
    KELP_ERRNO(ENFILE) KELP_ERRNO(EMFILE) KELP_ERRNO(ENOTTY) KELP_ERRNO(EFBIG) KELP_ERRNO(ENOSPC)
    KELP_ERRNO(EROFS) KELP_ERRNO(EPIPE) KELP_ERRNO(ERANGE) KELP_ERRNO(EDEADLK)
    KELP_ERRNO(ENAMETOOLONG) KELP_ERRNO(ENOSYS) KELP_ERRNO(ENOTEMPTY) KELP_ERRNO(ELOOP)
    KELP_ERRNO(ENODATA) KELP_ERRNO(ENOLINK) KELP_ERRNO(EBADMSG) KELP_ERRNO(EOVERFLOW)
    KELP_ERRNO(EPROTONOSUPPORT) KELP_ERRNO(ENOTSUP) KELP_ERRNO(EAFNOSUPPORT)
    KELP_ERRNO(EADDRINUSE) KELP_ERRNO(EADDRNOTAVAIL) KELP_ERRNO(ENETDOWN) KELP_ERRNO(ENETUNREACH)
    KELP_ERRNO(ENOBUFS) KELP_ERRNO(ENOTCONN) KELP_ERRNO(ETIMEDOUT) KELP_ERRNO(ECONNREFUSED)
    KELP_ERRNO(EALREADY) KELP_ERRNO(EINPROGRESS) KELP_ERRNO(ECANCELED)
#undef KELP_ERRNO
    case kENOTSUPP: return "ENOTSUPP";
    default: return "EUNKNOWN";
  }
}

void ThrowErrno(Napi::Env env, int err, const std::string& operation, const std::string& verifierLog) {
  if (err < 0) err = -err;
  const char* code = ErrnoName(err);
  std::string detail = err == kENOTSUPP ? "operation not supported by the kernel" : std::strerror(err);
  std::string msg = operation + ": " + code + " (" + detail + ")";
  Napi::Object fields = Napi::Object::New(env);
  fields.Set("errno", Napi::Number::New(env, err));
  fields.Set("code", Napi::String::New(env, code));
  fields.Set("operation", Napi::String::New(env, operation));
  if (!verifierLog.empty()) fields.Set("verifierLog", Napi::String::New(env, verifierLog));
  Napi::FunctionReference& cls = Data(env).errorClass;
  if (!cls.IsEmpty()) {
    throw Napi::Error(env, cls.New({Napi::String::New(env, msg), fields}));
  }
  Napi::Error e = Napi::Error::New(env, msg);
  for (const char* k : {"errno", "code", "operation", "verifierLog"}) {
    if (fields.Has(k)) e.Set(k, fields.Get(k));
  }
  throw e;
}

// The facade's error class: constructed as new Class(message, { errno, code, operation, verifierLog? }).
static void SetErrorClass(const Napi::CallbackInfo& info) {
  Data(info.Env()).errorClass = Napi::Persistent(info[0].As<Napi::Function>());
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
}

}  // namespace kelp
