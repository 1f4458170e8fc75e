// One rtnetlink request off the event loop. The kernel does a request's work inside the
// sender's sendmsg, and some requests wait long there: deleting a veth ends with an
// rcu_barrier() (~20 ms here). The agent's netlink sockets are synchronous, so on its one thread
// such a request stalls every other CNI call meanwhile. This sends a message the caller built
// (src/netlink) from a socket opened on a thread-pool thread, in the namespace the caller's fd
// names, and resolves with the kernel's answer: 0 or a negative errno.
#include <fcntl.h>
#include <linux/netlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
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
}

}  // namespace kelp
