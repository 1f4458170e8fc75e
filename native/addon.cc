// Entry point of the kelp addon: registration only. Each concern lives in its own file.
#include <napi.h>
#include "kelp.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  kelp::InitNetns(env, exports);
  return exports;
}

NODE_API_MODULE(kelp, Init)
