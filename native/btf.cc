// Struct layouts from an object file's BTF, so TypeScript codecs can be checked against C.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <memory>
#include "kelp.h"

namespace kelp {

// btfStructLayout(file, name) → { kind: 'struct'|'union', size, members: [{ name, offset, size,
// bitOffset?, bitSize? }] }. Offsets and sizes in bytes; bit fields also give their bit position.
static Napi::Value BtfStructLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = info[0].As<Napi::String>();
  std::string name = info[1].As<Napi::String>();
  std::unique_ptr<struct btf, void (*)(struct btf*)> btf(btf__parse_elf(file.c_str(), nullptr), btf__free);
  if (!btf) ThrowErrno(env, errno, "parse BTF of " + file);
  bool isUnion = false;
  int id = btf__find_by_name_kind(btf.get(), name.c_str(), BTF_KIND_STRUCT);
  if (id < 0) {
    id = btf__find_by_name_kind(btf.get(), name.c_str(), BTF_KIND_UNION);
    isUnion = true;
  }
  if (id < 0) ThrowErrno(env, ENOENT, "find struct " + name + " in BTF of " + file);
  const struct btf_type* t = btf__type_by_id(btf.get(), id);
  Napi::Object out = Napi::Object::New(env);
  out.Set("kind", isUnion ? "union" : "struct");
  out.Set("size", t->size);
  Napi::Array members = Napi::Array::New(env);
  const struct btf_member* m = btf_members(t);
  for (__u16 i = 0; i < btf_vlen(t); i++, m++) {
    Napi::Object o = Napi::Object::New(env);
    __u32 bitOffset = btf_member_bit_offset(t, i);
    __u32 bitSize = btf_member_bitfield_size(t, i);
    __s64 size = btf__resolve_size(btf.get(), m->type);
    if (size < 0) ThrowErrno(env, static_cast<int>(size), "resolve size of " + name + " member " + std::to_string(i));
    o.Set("name", btf__name_by_offset(btf.get(), m->name_off));
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

void InitBtf(Napi::Env env, Napi::Object exports) {
  exports.Set("btfStructLayout", Napi::Function::New(env, BtfStructLayout, "btfStructLayout"));
}

}  // namespace kelp
