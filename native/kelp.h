// Shared declarations of the kelp addon.
#pragma once
#include <napi.h>
#include <string>

namespace kelp {

// Throws the addon's one error shape: Error with .errno (positive), .code ("ENOENT"),
// .operation ("bpf_map_update_elem") and, where there is one, .verifierLog.
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const std::string& operation,
                             const std::string& verifierLog = "");

void InitNetns(Napi::Env env, Napi::Object exports);

}  // namespace kelp
