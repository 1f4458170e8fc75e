// Entry point of the kelp addon: registration only. Each concern lives in its own file.
#include <napi.h>
#include "kelp.h"

namespace kelp {

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace kelp

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new kelp::AddonData());
  kelp::InitErrors(env, exports);
  kelp::InitLog(env, exports);
  kelp::InitFd(env, exports);
  kelp::InitObject(env, exports);
  kelp::InitBtf(env, exports);
  kelp::InitMap(env, exports);
  kelp::InitTestRun(env, exports);
  kelp::InitLink(env, exports);
  kelp::InitRingBuf(env, exports);
  kelp::InitNetns(env, exports);
  kelp::InitRtnl(env, exports);
  kelp::InitIter(env, exports);
  kelp::InitMaglev(env, exports);
  return exports;
}

NODE_API_MODULE(kelp, Init)
