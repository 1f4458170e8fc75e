// libbpf's log, buffered until the facade drains it. libbpf calls its print hook from inside
// our own synchronous calls, where calling back into JS would re-enter the caller mid-operation;
// the facade drains after every libbpf-heavy call and hands the lines to its logger.
#include <bpf/libbpf.h>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <utility>
#include <vector>
#include "kelp.h"

namespace kelp {

// Bounded so a caller that never drains cannot grow it without limit.
static constexpr size_t kMaxLines = 4096;

static std::mutex mu;
static std::vector<std::pair<int, std::string>> lines;
static size_t dropped = 0;

static int Print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  std::string text(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(&text[0], text.size(), fmt, ap);
  text.resize(static_cast<size_t>(n));
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::lock_guard<std::mutex> lock(mu);
  if (lines.size() >= kMaxLines) {
    dropped++;
    return 0;
  }
  lines.emplace_back(static_cast<int>(level), std::move(text));
  return 0;
}

// drainLog() → [level, text][]; level: 0 warn, 1 info, 2 debug (libbpf_print_level).
static Napi::Value DrainLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::pair<int, std::string>> taken;
  size_t lost;
  {
    std::lock_guard<std::mutex> lock(mu);
    taken.swap(lines);
    lost = dropped;
    dropped = 0;
  }
  if (lost > 0) taken.emplace_back(LIBBPF_WARN, std::to_string(lost) + " libbpf log lines dropped");
  Napi::Array out = Napi::Array::New(env, taken.size());
  for (size_t i = 0; i < taken.size(); i++) {
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, Napi::Number::New(env, taken[i].first));
    pair.Set(1u, Napi::String::New(env, taken[i].second));
    out.Set(static_cast<uint32_t>(i), pair);
  }
  return out;
}

void InitLog(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(Print);
  exports.Set("drainLog", Napi::Function::New(env, DrainLog, "drainLog"));
}

}  // namespace kelp
