// Network namespace switching for the calling thread. setns is per-thread, so only this (the JS)
// thread moves; the original namespace is always restored, even when the work throws. Never
// await inside: other JS would run in the wrong namespace.
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
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

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// netnsCookie(netnsFd | -1) → bigint: the kernel's cookie of that namespace (or the calling
// thread's), as bpf_get_netns_cookie() gives it to programs: asked of a socket made there.
static Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int nsFd = info[0].As<Napi::Number>().Int32Value();
  int s;
  if (nsFd >= 0) {
    NetnsGuard guard(env, nsFd, "into the namespace to read its cookie");
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  } else {
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  }
  if (s < 0) ThrowErrno(env, errno, "open a socket to read the netns cookie");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  int err = getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int e = errno;
  ::close(s);
  if (err < 0) ThrowErrno(env, e, "getsockopt SO_NETNS_COOKIE");
  return Napi::BigInt::New(env, cookie);
}

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("inNetns", Napi::Function::New(env, InNetns, "inNetns"));
  exports.Set("currentNetns", Napi::Function::New(env, CurrentNetns, "currentNetns"));
}

}  // namespace kelp
