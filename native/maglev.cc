// Maglev table population for many backend sets in one call (src/service/maglev.ts holds the
// algorithm's reference in TypeScript and its reasoning; src/bpf/maglev.ts checks the arguments).
// Why native: a first run of 10,000 Services of two backends each fills 10,000 tables (each set's
// M is maglevTableSizeFor(its backends, --maglev-table-size): 251 slots for two), M ln M probes
// each; TypeScript spends several times as long on them plus ~40 ms hashing backend names through
// node:crypto one name at a time. The caller groups tables by M: one call per size. The result must equal the reference slot for slot
// (test/unit/service-maglev-native.test.ts): the same SHA-256 halves, the same turn order (the
// caller passes names already in turn order), the same claim loop. The compiler starts a large
// fill (maglevFillStart) and builds its frontends beside the threads, then waits (maglevFillWait).
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <string>
#include <thread>
#include <vector>
#include "crew.h"
#include "kelp.h"

namespace kelp {

namespace {

// SHA-256 (FIPS 180-4) of a short message: backend names are a few dozen bytes.
class Sha256 {
 public:
  static void Digest(const uint8_t* msg, size_t len, uint8_t out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t block[64];
    size_t done = 0;
    for (; len - done >= 64; done += 64) Compress(h, msg + done);
    // The tail, the 0x80 marker and the bit length, in one or two blocks.
    size_t rest = len - done;
    std::memset(block, 0, sizeof block);
    std::memcpy(block, msg + done, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
      Compress(h, block);
      std::memset(block, 0, sizeof block);
    }
    uint64_t bits = static_cast<uint64_t>(len) * 8;
    for (int i = 0; i < 8; i++) block[63 - i] = static_cast<uint8_t>(bits >> (8 * i));
    Compress(h, block);
    for (int i = 0; i < 8; i++) {
      out[4 * i] = static_cast<uint8_t>(h[i] >> 24);
      out[4 * i + 1] = static_cast<uint8_t>(h[i] >> 16);
      out[4 * i + 2] = static_cast<uint8_t>(h[i] >> 8);
      out[4 * i + 3] = static_cast<uint8_t>(h[i]);
    }
  }

 private:
  static uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  static void Compress(uint32_t h[8], const uint8_t* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
      w[i] = (static_cast<uint32_t>(p[4 * i]) << 24) | (static_cast<uint32_t>(p[4 * i + 1]) << 16) |
             (static_cast<uint32_t>(p[4 * i + 2]) << 8) | p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
      uint32_t t1 = hh + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
};

uint64_t BigEndian64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

// The claim loop of maglevPopulate: backends take turns claiming the next free slot of their
// permutation. `table` (m slots) receives turn indices; -1 marks a free slot while it runs.
void Populate(const uint32_t* offset, const uint32_t* skip, uint32_t n, uint32_t m, int32_t* table, uint32_t* pos) {
  for (uint32_t c = 0; c < m; c++) table[c] = -1;
  for (uint32_t k = 0; k < n; k++) pos[k] = offset[k];
  uint32_t filled = 0;
  for (;;) {
    for (uint32_t k = 0; k < n; k++) {
      uint32_t c = pos[k];
      const uint32_t s = skip[k];
      while (table[c] >= 0) {
        c += s;
        if (c >= m) c -= m;
      }
      table[c] = static_cast<int32_t>(k);
      c += s;
      pos[k] = c >= m ? c - m : c;
      if (++filled == m) return;
    }
  }
}

}  // namespace

// One set's work, located by the main thread: its names start at names[first], its table goes
// to out. The worker threads touch nothing of JavaScript's.
struct FillJob {
  const uint8_t* names;  // the set's first name; each ends with a NUL
  uint32_t n;
  const uint16_t* inputIndex;
  uint16_t* out;
};

void FillRange(const FillJob* jobs, size_t count, uint32_t m) {
  std::vector<int32_t> table(m);
  std::vector<uint32_t> offset, skip, pos;
  for (size_t i = 0; i < count; i++) {
    const FillJob& job = jobs[i];
    offset.resize(job.n);
    skip.resize(job.n);
    pos.resize(job.n);
    const uint8_t* p = job.names;
    for (uint32_t k = 0; k < job.n; k++) {
      size_t len = std::strlen(reinterpret_cast<const char*>(p));
      uint8_t d[32];
      Sha256::Digest(p, len, d);
      offset[k] = static_cast<uint32_t>(BigEndian64(d) % m);
      skip[k] = static_cast<uint32_t>(BigEndian64(d + 8) % (m - 1)) + 1;
      p += len + 1;
    }
    Populate(offset.data(), skip.data(), job.n, m, table.data(), pos.data());
    for (uint32_t c = 0; c < m; c++) job.out[c] = job.inputIndex[table[c]];
  }
}

// Below this many slots in all, one thread: starting threads costs more than it saves.
constexpr size_t kParallelSlots = 1 << 20;
constexpr unsigned kMaxThreads = 4;

// A fill's jobs and the crew working on them (crew.h: a few at a time from a shared cursor, the
// caller that joins doing what no thread reached). The threads write only into the tables and
// read only the names, counts and input indices, whose JavaScript objects the caller keeps alive
// until Join() (src/bpf/maglev.ts holds them in the handle it returns).
struct FillTask {
  // Tables per take: a few hundred microseconds of work, so the share evens out at the end.
  static constexpr size_t kTake = 64;
  std::vector<FillJob> jobs;
  uint32_t m = 0;
  Crew crew;

  void Work() {
    crew.Drain(jobs.size(), kTake, [this](size_t first, size_t n) { FillRange(jobs.data() + first, n, m); });
  }
  void Start(unsigned threads) { crew.Start(threads, [this] { Work(); }); }
  void Join() { crew.Join([this] { Work(); }); }
  ~FillTask() { Join(); }
};

// Reads the names, counts, input indices and m of maglevFill's arguments into `task`, set i's
// table from outOf(i) (nullptr: an exception is pending); false (a JavaScript exception pending)
// when a table is bad or the names run out before the counts do.
template <typename OutOf>
static bool ReadJobs(const Napi::CallbackInfo& info, FillTask& task, OutOf outOf) {
  Napi::Env env = info.Env();
  auto names = info[0].As<Napi::Buffer<uint8_t>>();
  auto counts = info[1].As<Napi::Uint32Array>();
  auto inputIndex = info[2].As<Napi::Uint16Array>();
  task.m = info[3].As<Napi::Number>().Uint32Value();
  const uint8_t* p = names.Data();
  const uint8_t* end = p + names.Length();
  size_t sets = counts.ElementLength();
  task.jobs.resize(sets);
  size_t at = 0;
  for (size_t i = 0; i < sets; i++) {
    uint32_t n = counts[i];
    uint16_t* out = outOf(i);
    if (out == nullptr) {
      // Nothing of a refused call is filled (the destructor's Join() must find no job).
      task.jobs.clear();
      return false;
    }
    task.jobs[i] = FillJob{p, n, inputIndex.Data() + at, out};
    for (uint32_t k = 0; k < n; k++) {
      const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(p, 0, end - p));
      if (nul == nullptr) {
        Napi::RangeError::New(env, "maglev fill: fewer names than the counts add up to").ThrowAsJavaScriptException();
        task.jobs.clear();
        return false;
      }
      p = nul + 1;
    }
    at += n;
  }
  return true;
}

static unsigned Threads(const FillTask& task) {
  if (task.jobs.size() * task.m < kParallelSlots) return 1;
  return std::max(1u, std::min(kMaxThreads, std::thread::hardware_concurrency()));
}

// maglevFill(names, counts, inputIndex, m, outs): `names` holds every set's backend names in
// turn order, each followed by a NUL; counts[i] is set i's number of backends; inputIndex gives
// each name's index in the set as the caller listed it; outs[i] (a Uint16Array of m) receives set
// i's table, slot → input index. The facade has checked lengths, m and the counts. Large batches
// (a first run: 10,000 tables) are split over a few threads, joined before it returns.
static Napi::Value MaglevFill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FillTask task;
  auto outs = info[4].As<Napi::Array>();
  if (!ReadJobs(info, task, [&](size_t i) { return outs.Get(static_cast<uint32_t>(i)).As<Napi::Uint16Array>().Data(); })) return env.Undefined();
  // The calling thread is one of the workers.
  unsigned threads = Threads(task);
  if (threads > 1) task.Start(threads - 1);
  task.Join();
  return Napi::Number::New(env, static_cast<double>(task.jobs.size()));
}

// maglevFillStart(names, counts, inputIndex, m, buffers, where) → a handle for maglevFillWait:
// maglevFill with a large batch's threads left running, so the caller's JavaScript goes on beside
// them (a first run builds its frontends meanwhile); a small batch is filled before it returns.
// Set i's table is m u16 slots at byte where[2i + 1] of buffers[where[2i]] (ArrayBuffers): a
// first run's 10,000 tables lie in a few shared buffers, and reading each one's view through
// N-API cost more than filling it. The tables must not be read, nor the arguments let go, before
// maglevFillWait(handle).
static Napi::Value MaglevFillStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto buffers = info[4].As<Napi::Array>();
  auto where = info[5].As<Napi::Uint32Array>();
  std::vector<std::pair<uint8_t*, size_t>> bases(buffers.Length());
  for (uint32_t b = 0; b < bases.size(); b++) {
    auto ab = buffers.Get(b).As<Napi::ArrayBuffer>();
    bases[b] = {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  auto* task = new FillTask();
  auto outOf = [&](size_t i) -> uint16_t* {
    uint32_t b = 2 * i + 1 < where.ElementLength() ? where[2 * i] : UINT32_MAX;
    uint64_t at = b < bases.size() ? where[2 * i + 1] : 0;
    if (b >= bases.size() || at % 2 != 0 || at + 2ull * task->m > bases[b].second) {
      Napi::RangeError::New(env, "maglev fill: set " + std::to_string(i) + "'s table lies outside its buffer").ThrowAsJavaScriptException();
      return nullptr;
    }
    return reinterpret_cast<uint16_t*>(bases[b].first + at);
  };
  if (!ReadJobs(info, *task, outOf)) {
    delete task;
    return env.Undefined();
  }
  unsigned threads = Threads(*task);
  if (threads == 1) task->Join();
  else task->Start(threads);
  // Collected unwaited (a caller that threw): the finalizer joins before the jobs go.
  return Napi::External<FillTask>::New(env, task, [](Napi::Env, FillTask* t) { delete t; });
}

// maglevFillWait(handle): returns once every table of the fill is written.
static Napi::Value MaglevFillWait(const Napi::CallbackInfo& info) {
  info[0].As<Napi::External<FillTask>>().Data()->Join();
  return info.Env().Undefined();
}

// maglevFirstBadTable(slots, starts, lengths, counts) → the first i whose table, slots[starts[i]]
// .. slots[starts[i] + lengths[i] - 1], holds a slot of counts[i] or more, or -1: the writer's check
// of a first run's 10,000 new tables in one call (a TypeScript loop over their 2.5 million slots
// cost ~10 ms, a call per table ~1 µs each). The facade has checked that every range lies in slots.
static Napi::Value MaglevFirstBadTable(const Napi::CallbackInfo& info) {
  auto slots = info[0].As<Napi::Uint16Array>();
  auto starts = info[1].As<Napi::Uint32Array>();
  auto lengths = info[2].As<Napi::Uint32Array>();
  auto counts = info[3].As<Napi::Uint32Array>();
  const uint16_t* s = slots.Data();
  size_t tables = starts.ElementLength();
  for (size_t i = 0; i < tables; i++) {
    const uint16_t* t = s + starts[i];
    uint32_t n = lengths[i];
    // The largest slot, branch-free (vectorised): a table is bad only when it reaches the count.
    uint16_t top = 0;
    for (uint32_t k = 0; k < n; k++) top = std::max(top, t[k]);
    if (top >= counts[i]) return Napi::Number::New(info.Env(), static_cast<double>(i));
  }
  return Napi::Number::New(info.Env(), -1);
}

void InitMaglev(Napi::Env env, Napi::Object exports) {
  exports.Set("maglevFirstBadTable", Napi::Function::New(env, MaglevFirstBadTable, "maglevFirstBadTable"));
  exports.Set("maglevFill", Napi::Function::New(env, MaglevFill, "maglevFill"));
  exports.Set("maglevFillStart", Napi::Function::New(env, MaglevFillStart, "maglevFillStart"));
  exports.Set("maglevFillWait", Napi::Function::New(env, MaglevFillWait, "maglevFillWait"));
}

}  // namespace kelp
