// Run a short synchronous JS function inside another network namespace.
// Only the calling thread switches (setns is per-thread); the original namespace is always
// restored before returning, even when the function throws. Never await inside it.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <cerrno>
#include "kelp.h"

namespace kelp {

static Napi::Value InNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsFunction())
    throw Napi::TypeError::New(env, "inNetns(path: string, fn: () => T)");
  std::string path = info[0].As<Napi::String>();
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) ThrowErrno(env, errno, "open netns " + path);
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    int e = errno;
    close(target);
    ThrowErrno(env, e, "open /proc/thread-self/ns/net");
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(target);
    close(self);
    ThrowErrno(env, e, "setns " + path);
  }
  close(target);
  Napi::Value result;
  bool failed = false;
  Napi::Error pending;
  try {
    result = info[1].As<Napi::Function>().Call({});
  } catch (const Napi::Error& e) {
    failed = true;
    pending = e;
  }
  if (setns(self, CLONE_NEWNET) < 0) {
    // Continuing in the wrong namespace would corrupt every later operation.
    abort();
  }
  close(self);
  if (failed) throw pending;
  return result;
}

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("inNetns", Napi::Function::New(env, InNetns, "inNetns"));
}

}  // namespace kelp
