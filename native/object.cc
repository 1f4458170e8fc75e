// A BPF object file: open, set load-time constants and pin paths, load (with the verifier log
// kept for the error), and hand out owned fds of its programs and maps.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <memory>
#include "kelp.h"

namespace kelp {

// Only the failing program's log is kept (libbpf stops at the first failure and retries it with
// log level 1 into this buffer). The kernel fails the load with ENOSPC when a level-1 log does not
// fit, so the buffer is generous; it is only touched on failure.
static constexpr size_t kVerifierLogSize = 16 << 20;

static int DupFd(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

// Internal maps are named "<object prefix>.<section>"; libbpf finds them by the section part.
static std::string MapName(const struct bpf_map* m) {
  std::string name = bpf_map__name(m);
  if (bpf_map__is_internal(m)) {
    size_t dot = name.find('.');
    if (dot != std::string::npos) return name.substr(dot);
  }
  return name;
}

static std::string BtfTypeName(const struct btf* btf, __u32 id) {
  if (!btf || id == 0) return "";
  const struct btf_type* t = btf__type_by_id(btf, id);
  if (!t) return "";
  const char* name = btf__name_by_offset(btf, t->name_off);
  return name ? name : "";
}

class ObjectHandle : public Napi::ObjectWrap<ObjectHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ObjectHandle",
                       {InstanceMethod<&ObjectHandle::Rodata>("rodata"),
                        InstanceMethod<&ObjectHandle::SetRodata>("setRodata"),
                        InstanceMethod<&ObjectHandle::SetPinPath>("setPinPath"),
                        InstanceMethod<&ObjectHandle::SetMaxEntries>("setMaxEntries"),
                        InstanceMethod<&ObjectHandle::SetValueSize>("setValueSize"),
                        InstanceMethod<&ObjectHandle::Load>("load"),
                        InstanceMethod<&ObjectHandle::Programs>("programs"),
                        InstanceMethod<&ObjectHandle::Maps>("maps"),
                        InstanceMethod<&ObjectHandle::ProgramFd>("programFd"),
                        InstanceMethod<&ObjectHandle::MapFd>("mapFd"),
                        InstanceMethod<&ObjectHandle::Close>("close")});
  }

  // new ObjectHandle(file, pinRoot?)
  explicit ObjectHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ObjectHandle>(info) {
    Napi::Env env = info.Env();
    file_ = info[0].As<Napi::String>();
    std::string pinRoot;
    if (info.Length() > 1 && info[1].IsString()) pinRoot = info[1].As<Napi::String>();
    LIBBPF_OPTS(bpf_object_open_opts, opts);
    if (!pinRoot.empty()) opts.pin_root_path = pinRoot.c_str();
    obj_ = bpf_object__open_file(file_.c_str(), &opts);
    if (!obj_) ThrowErrno(env, errno, "open " + file_);
    // Without a pin root nothing is pinned: libbpf's default root is the machine's /sys/fs/bpf,
    // shared with everything else on it.
    if (pinRoot.empty()) {
      struct bpf_map* m;
      bpf_object__for_each_map(m, obj_) {
        if (bpf_map__pin_path(m)) bpf_map__set_pin_path(m, nullptr);
      }
    }
  }
  ~ObjectHandle() override { Release(); }

 private:
  struct bpf_object* Need(Napi::Env env, const char* what) {
    if (!obj_) ThrowErrno(env, EBADF, std::string(what) + " " + file_ + " (object closed)");
    return obj_;
  }

  struct bpf_map* RodataMap() {
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj_) {
      if (bpf_map__is_internal(m) && MapName(m) == ".rodata") return m;
    }
    return nullptr;
  }

  // rodata() → { data: Buffer, vars: [{ name, offset, size }] } | undefined
  // `data` is a copy of the section's initial bytes: the facade patches it and hands it back,
  // so variables nobody sets keep their compiled-in defaults.
  Napi::Value Rodata(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Need(env, "rodata");
    struct bpf_map* map = RodataMap();
    if (!map) return env.Undefined();
    size_t size = 0;
    const void* init = bpf_map__initial_value(map, &size);
    if (!init) ThrowErrno(env, ENOENT, "read .rodata of " + file_);
    Napi::Object out = Napi::Object::New(env);
    out.Set("data", Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(init), size));
    Napi::Array vars = Napi::Array::New(env);
    struct btf* btf = bpf_object__btf(obj);
    int id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -ENOENT;
    if (id > 0) {
      const struct btf_type* sec = btf__type_by_id(btf, id);
      const struct btf_var_secinfo* vsi = btf_var_secinfos(sec);
      for (__u16 i = 0; i < btf_vlen(sec); i++, vsi++) {
        const struct btf_type* var = btf__type_by_id(btf, vsi->type);
        Napi::Object v = Napi::Object::New(env);
        v.Set("name", btf__name_by_offset(btf, var->name_off));
        v.Set("offset", vsi->offset);
        v.Set("size", vsi->size);
        vars.Set(vars.Length(), v);
      }
    }
    out.Set("vars", vars);
    return out;
  }

  void SetRodata(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Need(env, "set .rodata of");
    struct bpf_map* map = RodataMap();
    if (!map) ThrowErrno(env, ENOENT, "set .rodata of " + file_);
    Napi::Buffer<uint8_t> data = info[0].As<Napi::Buffer<uint8_t>>();
    int err = bpf_map__set_initial_value(map, data.Data(), data.Length());
    if (err) ThrowErrno(env, err, "set .rodata of " + file_);
  }

  // setPinPath(map, path): where load() pins the map, or finds it pinned and re-uses it (libbpf
  // checks the pinned map's type, sizes and flags). Only before load: libbpf pins while loading.
  void SetPinPath(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>();
    std::string path = info[1].As<Napi::String>();
    struct bpf_object* obj = Need(env, "set pin path of");
    if (loaded_) ThrowErrno(env, EBUSY, "set pin path of " + name + " in " + file_ + " (already loaded)");
    struct bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map || bpf_map__is_internal(map)) ThrowErrno(env, ENOENT, "find map " + name + " in " + file_);
    int err = bpf_map__set_pin_path(map, path.c_str());
    if (err) ThrowErrno(env, err, "set pin path of " + name + " in " + file_);
  }

  // setMaxEntries(map, n): the map's size, in place of the one compiled in (per-node sizing). Only
  // before load: libbpf creates the map (or checks a pinned one against it) while loading.
  void SetMaxEntries(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>();
    uint32_t n = info[1].As<Napi::Number>().Uint32Value();
    struct bpf_object* obj = Need(env, "set max_entries of");
    if (loaded_) ThrowErrno(env, EBUSY, "set max_entries of " + name + " in " + file_ + " (already loaded)");
    struct bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map || bpf_map__is_internal(map)) ThrowErrno(env, ENOENT, "find map " + name + " in " + file_);
    int err = bpf_map__set_max_entries(map, n);
    if (err) ThrowErrno(env, err, "set max_entries of " + name + " in " + file_);
  }

  // setValueSize(map, n): the map's value size, in place of the one compiled in (a Maglev table's
  // length is a load-time choice). Only before load, for maps declared without a BTF value type.
  void SetValueSize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>();
    uint32_t n = info[1].As<Napi::Number>().Uint32Value();
    struct bpf_object* obj = Need(env, "set value size of");
    if (loaded_) ThrowErrno(env, EBUSY, "set value size of " + name + " in " + file_ + " (already loaded)");
    struct bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (!map || bpf_map__is_internal(map)) ThrowErrno(env, ENOENT, "find map " + name + " in " + file_);
    int err = bpf_map__set_value_size(map, n);
    if (err) ThrowErrno(env, err, "set value size of " + name + " in " + file_);
  }

  void Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Need(env, "load");
    std::unique_ptr<char[]> log(new char[kVerifierLogSize]);
    log[0] = '\0';
    struct bpf_program* prog;
    bpf_object__for_each_program(prog, obj) bpf_program__set_log_buf(prog, log.get(), kVerifierLogSize);
    int err = bpf_object__load(obj);
    bpf_object__for_each_program(prog, obj) bpf_program__set_log_buf(prog, nullptr, 0);
    if (err) ThrowErrno(env, err, "load " + file_, log.get());
    loaded_ = true;
  }

  // programs() → [{ name, section, type, attachType }]
  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Need(env, "programs of");
    Napi::Array out = Napi::Array::New(env);
    struct bpf_program* prog;
    bpf_object__for_each_program(prog, obj) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("name", bpf_program__name(prog));
      p.Set("section", bpf_program__section_name(prog));
      p.Set("type", static_cast<double>(bpf_program__type(prog)));
      p.Set("attachType", static_cast<double>(bpf_program__expected_attach_type(prog)));
      out.Set(out.Length(), p);
    }
    return out;
  }

  // maps() → [{ name, type, keySize, valueSize, maxEntries, flags, internal, pinPath, btfKeyType,
  // btfValueType }]
  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct bpf_object* obj = Need(env, "maps of");
    const struct btf* btf = bpf_object__btf(obj);
    Napi::Array out = Napi::Array::New(env);
    struct bpf_map* m;
    bpf_object__for_each_map(m, obj) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", MapName(m));
      o.Set("type", static_cast<double>(bpf_map__type(m)));
      o.Set("keySize", bpf_map__key_size(m));
      o.Set("valueSize", bpf_map__value_size(m));
      o.Set("maxEntries", bpf_map__max_entries(m));
      o.Set("flags", bpf_map__map_flags(m));
      o.Set("internal", bpf_map__is_internal(m));
      const char* pin = bpf_map__pin_path(m);
      o.Set("pinPath", pin ? Napi::Value(Napi::String::New(env, pin)) : env.Undefined());
      o.Set("btfKeyType", BtfTypeName(btf, bpf_map__btf_key_type_id(m)));
      o.Set("btfValueType", BtfTypeName(btf, bpf_map__btf_value_type_id(m)));
      out.Set(out.Length(), o);
    }
    return out;
  }

  // programFd(name) → a new fd owned by the caller (so a program handle outlives the object).
  Napi::Value ProgramFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>();
    struct bpf_program* prog = bpf_object__find_program_by_name(Need(env, "program of"), name.c_str());
    if (!prog) ThrowErrno(env, ENOENT, "find program " + name + " in " + file_);
    int fd = bpf_program__fd(prog);
    if (fd < 0) ThrowErrno(env, EBADF, "program " + name + " of " + file_ + " (not loaded)");
    int dup = DupFd(fd);
    if (dup < 0) ThrowErrno(env, errno, "dup program fd " + name);
    return Napi::Number::New(env, dup);
  }

  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>();
    struct bpf_map* map = bpf_object__find_map_by_name(Need(env, "map of"), name.c_str());
    if (!map) ThrowErrno(env, ENOENT, "find map " + name + " in " + file_);
    int fd = bpf_map__fd(map);
    if (fd < 0) ThrowErrno(env, EBADF, "map " + name + " of " + file_ + " (not loaded)");
    int dup = DupFd(fd);
    if (dup < 0) ThrowErrno(env, errno, "dup map fd " + name);
    return Napi::Number::New(env, dup);
  }

  void Close(const Napi::CallbackInfo&) { Release(); }

  void Release() {
    if (obj_) bpf_object__close(obj_);
    obj_ = nullptr;
  }

  std::string file_;
  struct bpf_object* obj_ = nullptr;
  bool loaded_ = false;
};

void InitObject(Napi::Env env, Napi::Object exports) {
  exports.Set("ObjectHandle", ObjectHandle::Define(env));
}

}  // namespace kelp
