// A BPF map behind an owned fd, with its geometry read from the kernel so every operation
// sizes its buffers itself. Sizes of the caller's buffers are checked by the facade first.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>
#include "crew.h"
#include "kelp.h"

namespace kelp {

static bool IsPerCpu(__u32 type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

class MapHandle : public Napi::ObjectWrap<MapHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "MapHandle",
                       {InstanceAccessor<&MapHandle::GetFd>("fd"),
                        InstanceMethod<&MapHandle::Info>("info"),
                        InstanceMethod<&MapHandle::Lookup>("lookup"),
                        InstanceMethod<&MapHandle::Update>("update"),
                        InstanceMethod<&MapHandle::Delete>("delete"),
                        InstanceMethod<&MapHandle::Keys>("keys"),
                        InstanceMethod<&MapHandle::LookupBatch>("lookupBatch"),
                        InstanceMethod<&MapHandle::UpdateBatch>("updateBatch"),
                        InstanceMethod<&MapHandle::DeleteBatch>("deleteBatch"),
                        InstanceMethod<&MapHandle::Close>("close")});
  }

  // new MapHandle(fd): takes ownership of fd, also when it is not a map (then it throws).
  explicit MapHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MapHandle>(info) {
    Napi::Env env = info.Env();
    fd_ = info[0].As<Napi::Number>().Int32Value();
    struct bpf_map_info mi;
    std::memset(&mi, 0, sizeof(mi));
    __u32 len = sizeof(mi);
    int err = bpf_obj_get_info_by_fd(fd_, &mi, &len);
    if (err) {
      Release();
      ThrowErrno(env, err, "read map info");
    }
    name_ = mi.name;
    type_ = mi.type;
    id_ = mi.id;
    keySize_ = mi.key_size;
    valueSize_ = mi.value_size;
    maxEntries_ = mi.max_entries;
    flags_ = mi.map_flags;
    perCpu_ = IsPerCpu(type_);
    numCpus_ = perCpu_ ? libbpf_num_possible_cpus() : 1;
    if (numCpus_ <= 0) {
      Release();
      ThrowErrno(env, numCpus_ ? numCpus_ : EINVAL, "count possible CPUs");
    }
    // The kernel copies per-CPU values in 8-byte slots.
    valueLen_ = perCpu_ ? ((valueSize_ + 7) / 8 * 8) * numCpus_ : valueSize_;
  }
  ~MapHandle() override { Release(); }

 private:
  int Fd(Napi::Env env, const char* op) {
    if (fd_ < 0) ThrowErrno(env, EBADF, std::string(op) + " " + name_ + " (map closed)");
    return fd_;
  }

  [[noreturn]] void Fail(Napi::Env env, int err, const char* op, const std::string& extra = "") {
    ThrowErrno(env, err, std::string(op) + " " + name_ + extra);
  }

  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

  // info() → { id, name, type, keySize, valueSize, maxEntries, flags, perCpu, numCpus, valueLen }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", id_);
    o.Set("name", name_);
    o.Set("type", type_);
    o.Set("keySize", keySize_);
    o.Set("valueSize", valueSize_);
    o.Set("maxEntries", maxEntries_);
    o.Set("flags", flags_);
    o.Set("perCpu", perCpu_);
    o.Set("numCpus", numCpus_);
    o.Set("valueLen", valueLen_);
    return o;
  }

  // lookup(key) → Buffer of valueLen bytes, or undefined when the key is absent.
  Napi::Value Lookup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = Fd(env, "lookup");
    Napi::Buffer<uint8_t> key = info[0].As<Napi::Buffer<uint8_t>>();
    Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, valueLen_);
    int err = bpf_map_lookup_elem(fd, key.Data(), value.Data());
    if (err == -ENOENT) return env.Undefined();
    if (err) Fail(env, err, "lookup");
    return value;
  }

  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = Fd(env, "update");
    Napi::Buffer<uint8_t> key = info[0].As<Napi::Buffer<uint8_t>>();
    Napi::Buffer<uint8_t> value = info[1].As<Napi::Buffer<uint8_t>>();
    __u64 flags = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0;
    int err = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
    if (err) Fail(env, err, "update");
  }

  // delete(key) → false when the key was absent.
  Napi::Value Delete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = Fd(env, "delete");
    Napi::Buffer<uint8_t> key = info[0].As<Napi::Buffer<uint8_t>>();
    int err = bpf_map_delete_elem(fd, key.Data());
    if (err == -ENOENT) return Napi::Boolean::New(env, false);
    if (err) Fail(env, err, "delete");
    return Napi::Boolean::New(env, true);
  }

  // keys() → Buffer[]. A hash map changed meanwhile may restart the walk (the kernel does so
  // when the previous key is gone), so the walk is capped at maxEntries keys.
  Napi::Value Keys(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = Fd(env, "iterate");
    Napi::Array out = Napi::Array::New(env);
    std::vector<uint8_t> prev(keySize_), next(keySize_);
    bool first = true;
    for (__u32 n = 0; n < maxEntries_; n++) {
      int err = bpf_map_get_next_key(fd, first ? nullptr : prev.data(), next.data());
      if (err == -ENOENT) break;
      if (err) Fail(env, err, "iterate");
      out.Set(n, Napi::Buffer<uint8_t>::Copy(env, next.data(), keySize_));
      prev.swap(next);
      first = false;
    }
    return out;
  }

  // lookupBatch(batchSize, andDelete) → { keys: Buffer, values: Buffer, count } over the whole map.
  Napi::Value LookupBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool del = info[1].ToBoolean();
    const char* op = del ? "lookup and delete batch" : "lookup batch";
    int fd = Fd(env, op);
    __u32 batch = std::max<__u32>(1, info[0].As<Napi::Number>().Uint32Value());
    // The cursor is opaque: a bucket index for hash maps, a key for arrays.
    std::vector<uint8_t> in(std::max<__u32>(keySize_, 8)), out(in.size());
    std::vector<uint8_t> keys, values;
    size_t count = 0;
    bool first = true;
    for (;;) {
      keys.resize((count + batch) * keySize_);
      values.resize((count + batch) * valueLen_);
      __u32 n = batch;
      LIBBPF_OPTS(bpf_map_batch_opts, opts);
      void* inBatch = first ? nullptr : in.data();
      uint8_t* k = keys.data() + count * keySize_;
      uint8_t* v = values.data() + count * valueLen_;
      int err = del ? bpf_map_lookup_and_delete_batch(fd, inBatch, out.data(), k, v, &n, &opts)
                    : bpf_map_lookup_batch(fd, inBatch, out.data(), k, v, &n, &opts);
      // A hash bucket holding more entries than the batch: retry it with a bigger batch.
      if (err == -ENOSPC && n == 0) {
        batch *= 2;
        continue;
      }
      if (err && err != -ENOENT) Fail(env, err, op);
      count += n;
      if (err == -ENOENT) break;  // the end of the map, normal
      in.swap(out);
      first = false;
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), count * keySize_));
    result.Set("values", Napi::Buffer<uint8_t>::Copy(env, values.data(), count * valueLen_));
    result.Set("count", static_cast<double>(count));
    return result;
  }

  // updateBatch(keys, values, count, flags): keys and values are packed back to back.
  void UpdateBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = Fd(env, "update batch");
    Napi::Buffer<uint8_t> keys = info[0].As<Napi::Buffer<uint8_t>>();
    Napi::Buffer<uint8_t> values = info[1].As<Napi::Buffer<uint8_t>>();
    __u32 count = info[2].As<Napi::Number>().Uint32Value();
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = static_cast<__u64>(info[3].As<Napi::Number>().Int64Value()));
    __u32 n = count;
    int err = bpf_map_update_batch(fd, keys.Data(), values.Data(), &n, &opts);
    if (err) Fail(env, err, "update batch", " (" + std::to_string(n) + " of " + std::to_string(count) + " written)");
  }

  // deleteBatch(keys, count) → how many were present. Absent keys are skipped, as delete() does.
  Napi::Value DeleteBatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = Fd(env, "delete batch");
    Napi::Buffer<uint8_t> keys = info[0].As<Napi::Buffer<uint8_t>>();
    __u32 count = info[1].As<Napi::Number>().Uint32Value();
    __u32 done = 0, deleted = 0;
    while (done < count) {
      __u32 n = count - done;
      LIBBPF_OPTS(bpf_map_batch_opts, opts);
      int err = bpf_map_delete_batch(fd, keys.Data() + static_cast<size_t>(done) * keySize_, &n, &opts);
      deleted += n;
      done += n;
      if (err == -ENOENT) {
        done++;  // the kernel stopped at this absent key
        continue;
      }
      if (err) Fail(env, err, "delete batch");
    }
    return Napi::Number::New(env, deleted);
  }

  void Close(const Napi::CallbackInfo&) { Release(); }

  void Release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
  std::string name_;
  __u32 type_ = 0, id_ = 0, keySize_ = 0, valueSize_ = 0, maxEntries_ = 0, flags_ = 0;
  bool perCpu_ = false;
  int numCpus_ = 1;
  __u32 valueLen_ = 0;
};

// One share of updateBatchesStart's work: entries [first, first + n) of one item.
struct BatchShare {
  int fd;
  const uint8_t* keys;
  const uint8_t* values;
  __u32 n;
  size_t item;
};

// Below this many entries in all, one thread: starting threads costs more than it saves.
constexpr size_t kParallelEntries = 8192;
constexpr unsigned kMaxBatchThreads = 4;

// updateBatchesStart's work: its shares and the crew taking them one at a time (crew.h). The
// threads read only the packed buffers, which the caller keeps alive until Join().
struct BatchTask {
  std::vector<BatchShare> shares;
  std::vector<std::atomic<int>> errs;
  Crew crew;

  explicit BatchTask(size_t items) : errs(items) {
    for (auto& e : errs) e.store(0);
  }

  void Work() {
    crew.Drain(shares.size(), 1, [this](size_t s, size_t) {
      const BatchShare& b = shares[s];
      LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
      __u32 n = b.n;
      int err = bpf_map_update_batch(b.fd, b.keys, b.values, &n, &opts);
      int none = 0;
      if (err) errs[b.item].compare_exchange_strong(none, err);
    });
  }

  void Start(unsigned threads) { crew.Start(std::min<size_t>(threads, shares.size()), [this] { Work(); }); }
  void Join() { crew.Join([this] { Work(); }); }
  ~BatchTask() { Join(); }
};

// Reads updateBatchesStart's arguments into a task of shares: `threads` receives how many threads the
// work is worth (1 below kParallelEntries entries in all).
static BatchTask* ReadBatches(const Napi::CallbackInfo& info, unsigned* threads) {
  auto fds = info[0].As<Napi::Int32Array>();
  auto keys = info[1].As<Napi::Array>();
  auto values = info[2].As<Napi::Array>();
  auto counts = info[3].As<Napi::Uint32Array>();
  auto keySizes = info[4].As<Napi::Uint32Array>();
  auto valueSizes = info[5].As<Napi::Uint32Array>();
  size_t items = fds.ElementLength();
  size_t total = 0;
  for (size_t i = 0; i < items; i++) total += counts[i];
  *threads = 1;
  if (total >= kParallelEntries) *threads = std::max(1u, std::min(kMaxBatchThreads, std::thread::hardware_concurrency()));
  size_t per = (total + *threads - 1) / *threads;
  auto* task = new BatchTask(items);
  for (size_t i = 0; i < items; i++) {
    const uint8_t* k = keys.Get(static_cast<uint32_t>(i)).As<Napi::Buffer<uint8_t>>().Data();
    const uint8_t* v = values.Get(static_cast<uint32_t>(i)).As<Napi::Buffer<uint8_t>>().Data();
    for (__u32 at = 0; at < counts[i];) {
      __u32 n = static_cast<__u32>(std::min<size_t>(per, counts[i] - at));
      task->shares.push_back(BatchShare{fds[i], k + static_cast<size_t>(at) * keySizes[i], v + static_cast<size_t>(at) * valueSizes[i], n, i});
      at += n;
    }
  }
  return task;
}

static Napi::Int32Array BatchErrors(Napi::Env env, BatchTask& task) {
  Napi::Int32Array out = Napi::Int32Array::New(env, task.errs.size());
  for (size_t i = 0; i < task.errs.size(); i++) out[i] = task.errs[i].load();
  return out;
}

// updateBatchesStart(fds, keys, values, counts, keySizes, valueSizes) → a handle for
// updateBatchesWait: item i puts counts[i] packed entries into map fds[i] (BPF_ANY), as
// updateBatch does. Large work (a first write of 10,000 Services: ~60,000 entries over three
// maps) is cut into shares run on threads while the caller's JavaScript goes on (the service
// writer encodes its frontends meanwhile): the kernel's hash map updates take per-bucket locks,
// so shares of one map and of different maps proceed side by side. Small work is done before it
// returns. The buffers must be kept alive, and not changed, until updateBatchesWait(handle); the
// facade checks sizes and redoes a failed item on its own for the error.
static Napi::Value UpdateBatchesStart(const Napi::CallbackInfo& info) {
  unsigned threads;
  BatchTask* task = ReadBatches(info, &threads);
  // The caller keeps a core busy with its JavaScript: one thread fewer than the cores (measured
  // on two cores: two threads beside the caller slowed its encoding by as much as they saved).
  // A caller that waits at once joins the work itself (Crew::Join).
  if (threads == 1) task->Join();
  else task->Start(std::max(1u, std::min(threads, std::thread::hardware_concurrency() - 1)));
  // Collected unwaited (a caller that threw): the finalizer joins before the shares go.
  return Napi::External<BatchTask>::New(info.Env(), task, [](Napi::Env, BatchTask* t) { delete t; });
}

// updateBatchesWait(handle) → updateBatches' Int32Array, once every share is written.
static Napi::Value UpdateBatchesWait(const Napi::CallbackInfo& info) {
  BatchTask* task = info[0].As<Napi::External<BatchTask>>().Data();
  task->Join();
  return BatchErrors(info.Env(), *task);
}

void InitMap(Napi::Env env, Napi::Object exports) {
  exports.Set("updateBatchesStart", Napi::Function::New(env, UpdateBatchesStart, "updateBatchesStart"));
  exports.Set("updateBatchesWait", Napi::Function::New(env, UpdateBatchesWait, "updateBatchesWait"));
  Napi::Function cls = MapHandle::Define(env);
  Data(env).mapHandle = Napi::Persistent(cls);
  exports.Set("MapHandle", cls);
  exports.Set("numPossibleCpus", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    int n = libbpf_num_possible_cpus();
    if (n < 0) ThrowErrno(info.Env(), n, "count possible CPUs");
    return Napi::Number::New(info.Env(), n);
  }, "numPossibleCpus"));
}

}  // namespace kelp
