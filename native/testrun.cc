// BPF_PROG_TEST_RUN: run a loaded program once (or `repeat` times) on a given packet.
#include <bpf/bpf.h>
#include <cerrno>
#include <vector>
#include "kelp.h"

namespace kelp {

// progTestRun(fd, data, dataSizeOut, ctx | undefined, repeat)
//   → { retval, duration, data: Buffer, ctx?: Buffer }; duration is the mean ns per run.
static Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> data = info[1].As<Napi::Buffer<uint8_t>>();
  __u32 dataSizeOut = info[2].As<Napi::Number>().Uint32Value();
  bool hasCtx = info[3].IsBuffer();
  __u32 repeat = info[4].As<Napi::Number>().Uint32Value();

  std::vector<uint8_t> dataOut(dataSizeOut);
  std::vector<uint8_t> ctxOut;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data.Data(), .data_out = dataOut.data(),
              .data_size_in = static_cast<__u32>(data.Length()), .data_size_out = dataSizeOut,
              .repeat = static_cast<int>(repeat));
  if (hasCtx) {
    Napi::Buffer<uint8_t> ctx = info[3].As<Napi::Buffer<uint8_t>>();
    ctxOut.resize(ctx.Length());
    opts.ctx_in = ctx.Data();
    opts.ctx_size_in = static_cast<__u32>(ctx.Length());
    opts.ctx_out = ctxOut.data();
    opts.ctx_size_out = static_cast<__u32>(ctxOut.size());
  }
  int err = bpf_prog_test_run_opts(fd, &opts);
  if (err == -ENOSPC) {
    // The kernel reports how much output there was; name it so the caller can size dataSizeOut.
    ThrowErrno(env, err, "test run (output is " + std::to_string(opts.data_size_out) +
                             " bytes, dataSizeOut is " + std::to_string(dataSizeOut) + ")");
  }
  if (err) ThrowErrno(env, err, "test run");
  Napi::Object out = Napi::Object::New(env);
  out.Set("retval", opts.retval);
  out.Set("duration", opts.duration);
  out.Set("data", Napi::Buffer<uint8_t>::Copy(env, dataOut.data(), opts.data_size_out));
  if (hasCtx) out.Set("ctx", Napi::Buffer<uint8_t>::Copy(env, ctxOut.data(), opts.ctx_size_out));
  return out;
}

void InitTestRun(Napi::Env env, Napi::Object exports) {
  exports.Set("progTestRun", Napi::Function::New(env, ProgTestRun, "progTestRun"));
}

}  // namespace kelp
