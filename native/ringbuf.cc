// A BPF ring buffer consumed on the Node event loop: libbpf's epoll fd is watched by a uv_poll_t,
// and each readable event drains the ring and hands every record to JS as its own Buffer. kelp's
// programs submit without a wakeup until a quarter of the ring waits (bpf/lib/events.h: a wakeup
// per sparse record costs more than the record), so a timer drains it too, every kDrainMs.
// No extra thread.
#include <bpf/libbpf.h>
#include <uv.h>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>
#include "kelp.h"

namespace kelp {

class RingBufHandle : public Napi::ObjectWrap<RingBufHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RingBufHandle",
                       {InstanceMethod<&RingBufHandle::Close>("close"), InstanceMethod<&RingBufHandle::Failed>("failed")});
  }

  // new RingBufHandle(mapFd, callback(record: Buffer))
  explicit RingBufHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingBufHandle>(info) {
    Napi::Env env = info.Env();
    int mapFd = info[0].As<Napi::Number>().Int32Value();
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    // The ring maps the map's pages and holds its own reference to it: mapFd may be closed later.
    rb_ = ring_buffer__new(mapFd, &RingBufHandle::OnSample, this, nullptr);
    if (!rb_) ThrowErrno(env, errno, "open ring buffer");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) {
      Release();
      ThrowErrno(env, EINVAL, "get the event loop");
    }
    poll_ = new uv_poll_t;
    poll_->data = this;
    int err = uv_poll_init(loop, poll_, ring_buffer__epoll_fd(rb_));
    if (err) {
      delete poll_;  // never initialised, so not for uv_close
      poll_ = nullptr;
      Release();
      ThrowErrno(env, -err, "watch ring buffer");
    }
    err = uv_poll_start(poll_, UV_READABLE, &RingBufHandle::OnReadable);
    if (err) {
      Release();
      ThrowErrno(env, -err, "watch ring buffer");
    }
    timer_ = new uv_timer_t;
    timer_->data = this;
    err = uv_timer_init(loop, timer_);
    if (err) {
      delete timer_;  // never initialised, so not for uv_close
      timer_ = nullptr;
      Release();
      ThrowErrno(env, -err, "start the ring buffer's timer");
    }
    err = uv_timer_start(timer_, &RingBufHandle::OnTimer, kDrainMs, kDrainMs);
    if (err) {
      Release();
      ThrowErrno(env, -err, "start the ring buffer's timer");
    }
    context_ = std::make_unique<Napi::AsyncContext>(env, "kelp.RingBuffer");
    // An open ring buffer is like an open socket: it stays alive (and keeps the loop alive)
    // until closed, however the caller holds it.
    Ref();
  }

  ~RingBufHandle() override { Release(); }

 private:
  // Records taken in one readable event at most: a flood is handed to JS in slices, so one
  // wakeup never holds the event loop for the whole ring. The ring stays readable (the kernel
  // reports it so while a record is left, and uv_poll is level-triggered), so the rest follows.
  static constexpr size_t kBudget = 4096;
  // OnSample's "budget reached": ring_buffer__consume stops with this record consumed and kept.
  static constexpr int kBudgetReached = -E2BIG;

  // Called by libbpf inside ring_buffer__consume: plain C++ only, nothing that calls into JS or
  // can throw through libbpf's C frames. The bytes are copied out (the ring's pages are reused
  // once the consumer position moves on) and become Buffers after the drain.
  static int OnSample(void* ctx, void* data, size_t size) {
    auto* self = static_cast<RingBufHandle*>(ctx);
    try {
      const auto* bytes = static_cast<const uint8_t*>(data);
      self->pending_.emplace_back(bytes, bytes + size);
    } catch (...) {
      // Out of memory: the record is lost here, counted rather than thrown into libbpf.
      self->failed_++;
      return 0;
    }
    return self->pending_.size() >= kBudget ? kBudgetReached : 0;
  }

  // Records submitted without a wakeup wait at most this long (a drop shows in `kelp observe`
  // well within a second); an idle ring costs a consume of nothing per tick.
  static constexpr uint64_t kDrainMs = 50;

  static void OnTimer(uv_timer_t* handle) {
    auto* self = static_cast<RingBufHandle*>(handle->data);
    if (self) self->Drain();
  }

  static void OnReadable(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<RingBufHandle*>(handle->data);
    if (self) self->Drain();
  }

  void Drain() {
    RingBufHandle* self = this;
    if (!self->rb_) return;
    Napi::Env env = self->Env();
    // Node keeps its main context entered while the loop runs, so a handle scope is enough here.
    Napi::HandleScope scope(env);
    // A strong local to this object: a callback that closes it must not let it be collected
    // while this loop still runs.
    Napi::Object keep = self->Value();
    // Records are collected first and delivered after the ring is drained, so a callback that
    // closes the ring never frees it under libbpf's feet.
    self->pending_.clear();
    int n = ring_buffer__consume(self->rb_);
    std::vector<std::vector<uint8_t>> records;
    records.swap(self->pending_);
    // An error other than the budget still delivers what was read before it.
    (void)n;
    for (auto& bytes : records) {
      if (!self->rb_) break;
      try {
        // Each record in a scope of its own: a slice of 4,096 makes no pile of live handles.
        Napi::HandleScope inner(env);
        Napi::Value record = Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
        self->callback_.MakeCallback(keep, {record}, *self->context_);
      } catch (const Napi::Error& e) {
        // As for any event emitter: the callback's exception goes to 'uncaughtException'.
        napi_fatal_exception(env, e.Value());
        break;
      }
    }
  }

  // failed(): records lost in the addon (no memory to copy them), for the reader's accounting.
  Napi::Value Failed(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(failed_)); }

  void Close(const Napi::CallbackInfo&) {
    if (!rb_) return;
    Release();
    callback_.Reset();
    Unref();
  }

  void Release() {
    if (timer_) {
      uv_timer_stop(timer_);
      timer_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(timer_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      timer_ = nullptr;
    }
    if (poll_) {
      uv_poll_stop(poll_);
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    if (rb_) ring_buffer__free(rb_);
    rb_ = nullptr;
  }

  struct ring_buffer* rb_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  std::vector<std::vector<uint8_t>> pending_;
  uint64_t failed_ = 0;
};

void InitRingBuf(Napi::Env env, Napi::Object exports) {
  exports.Set("RingBufHandle", RingBufHandle::Define(env));
}

}  // namespace kelp
