// rtnetlink transport of src/netlink, in two shapes:
//
// RtnlSocketHandle: a socket on the event loop. The kernel does a request's work inside the
// sender's sendmsg and queues the replies on the socket; a uv_poll_t reads them and hands them to
// JS. A socket error (ENOBUFS: the receive buffer overran and the kernel dropped replies) is
// handed over the same way, as an errno: nothing here throws out of a libuv callback, which is how
// the `netlink` package's poll handler aborted the process on EPOLLERR.
//
// rtnlRequestAsync: one request off the event loop. Some requests wait long inside sendmsg:
// deleting a veth ends with an rcu_barrier() (~20 ms here), which on the agent's one thread would
// stall every other CNI call meanwhile. This sends a message the caller built (src/netlink) from a
// socket opened on a thread-pool thread, in the namespace the caller's fd names, and resolves
// with the kernel's answer: 0 or a negative errno.
#include <fcntl.h>
#include <linux/netlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include "kelp.h"

namespace kelp {

class RtnlRequestWorker : public Napi::AsyncWorker {
 public:
  RtnlRequestWorker(Napi::Env env, int nsFd, std::vector<uint8_t> msg, std::string op)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), nsFd_(nsFd), msg_(std::move(msg)),
        op_(std::move(op)) {}

  ~RtnlRequestWorker() override {
    if (nsFd_ >= 0) ::close(nsFd_);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int sock = OpenSocket();
    if (sock < 0) return;
    struct sockaddr_nl kernel = {};
    kernel.nl_family = AF_NETLINK;
    ssize_t n;
    do {
      n = sendto(sock, msg_.data(), msg_.size(), 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      sysErr_ = errno;
      ::close(sock);
      return;
    }
    // The answer to our one request is its NLMSG_ERROR (an ACK when error is 0).
    alignas(struct nlmsghdr) char buf[8192];
    for (;;) {
      n = recv(sock, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        sysErr_ = errno;
        break;
      }
      int len = static_cast<int>(n);
      bool done = false;
      for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type != NLMSG_ERROR) continue;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
          sysErr_ = EPROTO;
        } else {
          result_ = static_cast<struct nlmsgerr*>(NLMSG_DATA(h))->error;
        }
        done = true;
        break;
      }
      if (done) break;
    }
    ::close(sock);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (sysErr_ == 0) {
      deferred_.Resolve(Napi::Number::New(env, result_));
      return;
    }
    try {
      ThrowErrno(env, sysErr_, op_);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  // A socket belongs to the namespace of the thread that creates it: this pool thread goes
  // there for the socket() call only, and back.
  int OpenSocket() {
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
      sysErr_ = errno;
      return -1;
    }
    if (setns(nsFd_, CLONE_NEWNET) < 0) {
      sysErr_ = errno;
      ::close(self);
      return -1;
    }
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    int err = errno;
    // A pool thread left in the wrong namespace would corrupt later work on it.
    if (setns(self, CLONE_NEWNET) < 0) abort();
    ::close(self);
    if (sock < 0) sysErr_ = err;
    return sock;
  }

  Napi::Promise::Deferred deferred_;
  int nsFd_;
  std::vector<uint8_t> msg_;
  std::string op_;
  int sysErr_ = 0;
  int result_ = 0;
};

// Reads per wake-up at most: more than a receive buffer holds (the kernel's default is ~208 KiB,
// each datagram costs at least ~0.7 KiB of it), so one wake-up normally empties the queue.
static constexpr int kMaxReadsPerWake = 1024;
// Replies are at most ~32 KiB (a dump's part) unless a single object is larger; one that does
// not fit is a lost reply, reported like an overrun.
static constexpr size_t kReceiveBufferBytes = 64 * 1024;

class RtnlSocketHandle : public Napi::ObjectWrap<RtnlSocketHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RtnlSocketHandle",
                       {InstanceMethod<&RtnlSocketHandle::Send>("send"),
                        InstanceMethod<&RtnlSocketHandle::Close>("close")});
  }

  // new RtnlSocketHandle(netnsFd, receiveBufferBytes, onEvent(datagrams: Buffer[], errno: number))
  explicit RtnlSocketHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RtnlSocketHandle>(info) {
    Napi::Env env = info.Env();
    int nsFd = info[0].As<Napi::Number>().Int32Value();
    int rcvbuf = info[1].As<Napi::Number>().Int32Value();
    {
      // A socket belongs to the namespace it is made in, whatever thread uses it later.
      NetnsGuard guard(env, nsFd, "netns fd " + std::to_string(nsFd));
      fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
      if (fd_ < 0) ThrowErrno(env, errno, "netlink socket");
    }
    if (rcvbuf > 0 && setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0 &&
        setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0) {
      Fail(env, errno, "netlink socket: receive buffer");
    }
    // Connected to the kernel (port 0): the kernel refuses unicasts from every other socket, any
    // process's (ECONNREFUSED to them), so nobody else can fill this socket's buffer (making the
    // kernel drop our replies) or forge a reply.
    struct sockaddr_nl kernel = {};
    kernel.nl_family = AF_NETLINK;
    if (connect(fd_, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel)) < 0) {
      Fail(env, errno, "netlink socket: connect");
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) Fail(env, EINVAL, "netlink socket: event loop");
    poll_ = new uv_poll_t;
    int err = uv_poll_init(loop, poll_, fd_);
    if (err) {
      delete poll_;  // never initialised, so not for uv_close
      poll_ = nullptr;
      Fail(env, -err, "netlink socket: watch");
    }
    poll_->data = this;
    err = uv_poll_start(poll_, UV_READABLE, &RtnlSocketHandle::OnEvent);
    if (err) Fail(env, -err, "netlink socket: watch");
    // Never what keeps the process alive: a caller waiting for a reply holds a timer.
    uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    buf_.resize(kReceiveBufferBytes);
    onEvent_ = Napi::Persistent(info[2].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "kelp.RtnlSocket");
    // Alive until closed, however the caller holds it.
    Ref();
  }

  ~RtnlSocketHandle() override { Release(); }

 private:
  [[noreturn]] void Fail(Napi::Env env, int err, const std::string& op) {
    Release();
    ThrowErrno(env, err, op);
  }

  // Sends one complete message (header included) to the kernel, which handles it before this
  // returns; its replies are then queued on the socket.
  void Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto msg = info[0].As<Napi::Buffer<uint8_t>>();
    std::string op = info[1].As<Napi::String>();
    if (fd_ < 0) ThrowErrno(env, EBADF, op);
    ssize_t n;
    do {
      n = send(fd_, msg.Data(), msg.Length(), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) ThrowErrno(env, errno, op);
  }

  static void OnEvent(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<RtnlSocketHandle*>(handle->data);
    if (!self || self->fd_ < 0) return;
    // Nothing may leave a libuv callback by exception: that is std::terminate, the `netlink`
    // package's abort. N-API calls fail while the environment is torn down (the loop runs once
    // more at exit, this handle still open): nobody is left to tell then.
    try {
      self->Deliver(status);
    } catch (...) {
    }
  }

  void Deliver(int status) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    // A strong local: a callback that closes this socket must not let it be collected meanwhile.
    Napi::Object keep = Value();
    Napi::Array datagrams = Napi::Array::New(env);
    int err = Drain(datagrams);
    // On EPOLLERR libuv stops watching and reports UV_EBADF: the socket's own error says what
    // happened, unless a read above already took it.
    if (status < 0 && err == 0) err = TakeSocketError();
    if (status < 0 && err == 0) err = -status;
    if (datagrams.Length() == 0 && err == 0) return;
    // One call with the replies and the error: the replies that made it settle their requests,
    // then the error fails the rest, before any continuation can send on this socket again.
    if (!Call(keep, datagrams, err)) return;
    if (status < 0 && fd_ >= 0) {
      int r = uv_poll_start(poll_, UV_READABLE, &RtnlSocketHandle::OnEvent);
      if (r) Call(keep, Napi::Array::New(env), -r);
    }
  }

  // False when the callback threw: its exception goes to 'uncaughtException', as an event
  // emitter's would.
  bool Call(Napi::Object recv, Napi::Array datagrams, int err) {
    napi_env env = Env();
    napi_value args[] = {datagrams, Napi::Number::New(env, err)};
    napi_value result;
    if (napi_make_callback(env, *context_, recv, onEvent_.Value(), 2, args, &result) == napi_ok) return true;
    bool pending = false;
    napi_value exception;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
      napi_fatal_exception(env, exception);
    }
    return false;
  }

  // Reads every queued datagram from the kernel. The kernel reports an overrun (sk_err, ENOBUFS)
  // to the first read after it, once, ahead of the datagrams that did fit: those are read too.
  int Drain(Napi::Array& out) {
    int err = 0;
    for (int reads = 0; reads < kMaxReadsPerWake; reads++) {
      struct sockaddr_nl from = {};
      struct iovec iov = {buf_.data(), buf_.size()};
      struct msghdr msg = {};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof(from);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_TRUNC);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        // A second error is not the kernel's one-time report: stop rather than spin.
        if (err != 0) break;
        err = errno;
        continue;
      }
      if (from.nl_pid != 0) continue;  // not from the kernel (a connected socket gets none)
      if (static_cast<size_t>(n) > buf_.size()) {
        if (err == 0) err = EMSGSIZE;
        continue;
      }
      out.Set(out.Length(), Napi::Buffer<uint8_t>::Copy(Env(), buf_.data(), static_cast<size_t>(n)));
    }
    return err;
  }

  int TakeSocketError() {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
  }

  void Close(const Napi::CallbackInfo&) {
    if (fd_ < 0) return;
    Release();
    onEvent_.Reset();
    Unref();
  }

  void Release() {
    if (poll_) {
      uv_poll_stop(poll_);
      poll_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
  uv_poll_t* poll_ = nullptr;
  std::vector<uint8_t> buf_;
  Napi::FunctionReference onEvent_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

// rtnlRequestAsync(netnsFd, message, op) → Promise<0 | -errno>. The fd names the namespace
// (the caller keeps it; the worker works on its own duplicate).
static Napi::Value RtnlRequestAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsBuffer() || !info[2].IsString())
    throw Napi::TypeError::New(env, "rtnlRequestAsync(netnsFd: number, message: Buffer, op: string)");
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  if (buf.Length() < sizeof(struct nlmsghdr)) throw Napi::RangeError::New(env, "rtnlRequestAsync: message shorter than a netlink header");
  int ns = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
  if (ns < 0) ThrowErrno(env, errno, "duplicate netns fd");
  auto* w = new RtnlRequestWorker(env, ns, std::vector<uint8_t>(buf.Data(), buf.Data() + buf.Length()),
                                  info[2].As<Napi::String>().Utf8Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

void InitRtnl(Napi::Env env, Napi::Object exports) {
  exports.Set("rtnlRequestAsync", Napi::Function::New(env, RtnlRequestAsync, "rtnlRequestAsync"));
  exports.Set("RtnlSocketHandle", RtnlSocketHandle::Define(env));
}

}  // namespace kelp
