// Shared declarations of the kelp addon.
#pragma once
#include <napi.h>
#include <cstdint>
#include <string>

// libbpf 1.1's UAPI copy predates tcx (kernel 6.6); the kernel here has it.
#ifndef BPF_TCX_INGRESS
#define BPF_TCX_INGRESS 46
#define BPF_TCX_EGRESS 47
#endif
#ifndef BPF_LINK_TYPE_TCX
#define BPF_LINK_TYPE_TCX 11
#endif

namespace kelp {

// Per-environment state (one per Node environment that loads the addon).
struct AddonData {
  Napi::FunctionReference errorClass;  // set by the facade; plain Error until then
  Napi::FunctionReference fdHandle;
  Napi::FunctionReference mapHandle;
};
AddonData& Data(Napi::Env env);

// Throws the addon's one error shape: an instance of the error class registered by the facade
// (else Error) with .errno (positive), .code ("ENOENT"), .operation ("update kelp_endpoints")
// and, where there is one, .verifierLog. The message is "<operation>: <code> (<strerror>)".
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const std::string& operation,
                             const std::string& verifierLog = "");

// Takes ownership of fd: it is closed when the returned JS object is closed or collected.
Napi::Object NewFdHandle(Napi::Env env, int fd);

// Switches the calling thread into the network namespace behind `nsFd` and back again when
// it goes out of scope, even while an exception unwinds.
class NetnsGuard {
 public:
  NetnsGuard(Napi::Env env, int nsFd, const std::string& what);
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;

 private:
  int self_;
};

// Per-concern registration, called from addon.cc only.
void InitErrors(Napi::Env env, Napi::Object exports);
void InitLog(Napi::Env env, Napi::Object exports);
void InitFd(Napi::Env env, Napi::Object exports);
void InitObject(Napi::Env env, Napi::Object exports);
void InitBtf(Napi::Env env, Napi::Object exports);
void InitMap(Napi::Env env, Napi::Object exports);
void InitTestRun(Napi::Env env, Napi::Object exports);
void InitLink(Napi::Env env, Napi::Object exports);
void InitRtnl(Napi::Env env, Napi::Object exports);
void InitRingBuf(Napi::Env env, Napi::Object exports);
void InitNetns(Napi::Env env, Napi::Object exports);
void InitIter(Napi::Env env, Napi::Object exports);
void InitMaglev(Napi::Env env, Napi::Object exports);

}  // namespace kelp
