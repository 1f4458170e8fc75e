// Struct layouts and enums from an object file's BTF, so TypeScript mirrors can be checked against C.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdint>
#include <memory>
#include "kelp.h"

namespace kelp {

using BtfPtr = std::unique_ptr<struct btf, void (*)(struct btf*)>;

struct BtfType {
  BtfPtr btf;  // owns `type`
  const struct btf_type* type;
  std::string name;
};

// The BTF of object file info[0] and its type named info[1] of kind `kind` or else `alt`; ENOENT
// "find <what> <name> in BTF of <file>" when there is none.
static BtfType FindType(const Napi::CallbackInfo& info, int kind, int alt, const char* what) {
  Napi::Env env = info.Env();
  std::string file = info[0].As<Napi::String>();
  std::string name = info[1].As<Napi::String>();
  BtfPtr btf(btf__parse_elf(file.c_str(), nullptr), btf__free);
  if (!btf) ThrowErrno(env, errno, "parse BTF of " + file);
  int id = btf__find_by_name_kind(btf.get(), name.c_str(), kind);
  if (id < 0) id = btf__find_by_name_kind(btf.get(), name.c_str(), alt);
  if (id < 0) ThrowErrno(env, ENOENT, std::string("find ") + what + " " + name + " in BTF of " + file);
  const struct btf_type* t = btf__type_by_id(btf.get(), id);
  return {std::move(btf), t, name};
}

// btfStructLayout(file, name) → { kind: 'struct'|'union', size, members: [{ name, offset, size,
// bitOffset?, bitSize? }] }. Offsets and sizes in bytes; bit fields also give their bit position.
static Napi::Value BtfStructLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BtfType found = FindType(info, BTF_KIND_STRUCT, BTF_KIND_UNION, "struct");
  struct btf* btf = found.btf.get();
  const struct btf_type* t = found.type;
  Napi::Object out = Napi::Object::New(env);
  out.Set("kind", btf_is_union(t) ? "union" : "struct");
  out.Set("size", t->size);
  Napi::Array members = Napi::Array::New(env);
  const struct btf_member* m = btf_members(t);
  for (__u16 i = 0; i < btf_vlen(t); i++, m++) {
    Napi::Object o = Napi::Object::New(env);
    __u32 bitOffset = btf_member_bit_offset(t, i);
    __u32 bitSize = btf_member_bitfield_size(t, i);
    __s64 size = btf__resolve_size(btf, m->type);
    if (size < 0) ThrowErrno(env, static_cast<int>(size), "resolve size of " + found.name + " member " + std::to_string(i));
    o.Set("name", btf__name_by_offset(btf, m->name_off));
    o.Set("offset", bitOffset / 8);
    o.Set("size", bitSize ? (bitSize + 7) / 8 : static_cast<double>(size));
    if (bitSize) {
      o.Set("bitOffset", bitOffset);
      o.Set("bitSize", bitSize);
    }
    members.Set(members.Length(), o);
  }
  out.Set("members", members);
  return out;
}

// btfEnum(file, name) → { ENUMERATOR: value }. BTF_KIND_ENUM or ENUM64 (values above 32 bits);
// the kind flag says whether values are signed. Values a double cannot hold exactly are ERANGE.
static Napi::Value BtfEnum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BtfType found = FindType(info, BTF_KIND_ENUM, BTF_KIND_ENUM64, "enum");
  const struct btf_type* t = found.type;
  bool isSigned = btf_kflag(t);
  constexpr double kExact = 9007199254740992.0;  // 2^53
  Napi::Object out = Napi::Object::New(env);
  for (__u16 i = 0; i < btf_vlen(t); i++) {
    __u32 nameOff;
    double value;
    if (btf_is_enum64(t)) {
      const struct btf_enum64* e = btf_enum64(t) + i;
      nameOff = e->name_off;
      __u64 raw = btf_enum64_value(e);
      value = isSigned ? static_cast<double>(static_cast<int64_t>(raw)) : static_cast<double>(raw);
    } else {
      const struct btf_enum* e = btf_enum(t) + i;
      nameOff = e->name_off;
      value = isSigned ? static_cast<double>(e->val) : static_cast<double>(static_cast<__u32>(e->val));
    }
    const char* member = btf__name_by_offset(found.btf.get(), nameOff);
    if (value >= kExact || value <= -kExact) ThrowErrno(env, ERANGE, "read enum " + found.name + " value " + member);
    out.Set(member, value);
  }
  return out;
}

void InitBtf(Napi::Env env, Napi::Object exports) {
  exports.Set("btfStructLayout", Napi::Function::New(env, BtfStructLayout, "btfStructLayout"));
  exports.Set("btfEnum", Napi::Function::New(env, BtfEnum, "btfEnum"));
}

}  // namespace kelp
