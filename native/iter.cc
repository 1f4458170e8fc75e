// BPF iterators (iter/udp, iter/tcp, ...): an iterator link made with linkCreate (attach type
// BPF_TRACE_ITER) is run by opening an iterator fd on it and reading it to the end; each read
// runs the program over the next batch of objects. Socket iterators walk the network namespace
// of the thread that opens the fd (the kernel takes current's netns then), so the fd is opened
// inside the wanted namespace and read from wherever the caller is.
#include <bpf/bpf.h>
#include <unistd.h>
#include <cerrno>
#include <string>
#include <vector>
#include "kelp.h"

namespace kelp {

// iterRun(linkFd, netnsFd | -1) → Buffer: everything the program wrote with bpf_seq_*.
static Napi::Value IterRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int linkFd = info[0].As<Napi::Number>().Int32Value();
  int nsFd = info[1].As<Napi::Number>().Int32Value();
  int fd;
  if (nsFd >= 0) {
    NetnsGuard guard(env, nsFd, "into the namespace to iterate");
    fd = bpf_iter_create(linkFd);
  } else {
    fd = bpf_iter_create(linkFd);
  }
  if (fd < 0) ThrowErrno(env, fd, "create iterator");
  std::vector<char> out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ThrowErrno(env, e, "read iterator");
    }
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return Napi::Buffer<char>::Copy(env, out.data(), out.size());
}

void InitIter(Napi::Env env, Napi::Object exports) {
  exports.Set("iterRun", Napi::Function::New(env, IterRun, "iterRun"));
}

}  // namespace kelp
