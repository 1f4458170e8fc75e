// loadObject: constants, pins, verifier log, the error shape, BTF layouts and enums. Real kernel,
// private bpffs.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { btfEnum, btfStructLayout, loadObject, openPinnedMap } from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { cleanupAll, mountBpffs } from '../support/netns';

const fixture = (name: string) => path.join(__dirname, '../../build/bpf', `fixture_${name}.o`);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
// Smallest packet a tc test run accepts: an Ethernet header.
const packet = (len = 64) => Buffer.alloc(len, 0xab);

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

afterAll(cleanupAll);

describe('loadObject', () => {
  it('describes programs and maps', () => {
    const obj = loadObject(fixture('maps'));
    try {
      expect(obj.programs()).toEqual(['fx_classify']);
      expect(obj.programInfo('fx_classify')).toMatchObject({ section: 'tc', type: 3 });
      expect(obj.maps()).toEqual(expect.arrayContaining(['fx_hash', 'fx_percpu', 'fx_pinned', 'fx_array', '.rodata']));
      expect(obj.mapInfo('fx_percpu')).toMatchObject({
        type: 6,
        keySize: 4,
        valueSize: 12,
        maxEntries: 4,
        btfValueType: 'fx_val',
      });
      const prog = obj.program('fx_classify');
      expect(prog.fd).toBeGreaterThan(0);
      expect(prog.type).toBe(3);
      expect(prog.tag).toMatch(/^[0-9a-f]{16}$/);
      expect(obj.program('fx_classify')).toBe(prog);
    } finally {
      obj.close();
    }
  });

  it('sets .rodata constants that change the verdict', () => {
    const run = (constants?: Record<string, number | bigint | Buffer>) => {
      const obj = loadObject(fixture('maps'), { constants });
      try {
        const retval = obj.program('fx_classify').testRun({ data: packet() }).retval;
        const hash = obj.map('fx_hash');
        return { retval, byte: hash.lookup(u32(1))!.readBigUInt64LE(), wide: hash.lookup(u32(2))!.readBigUInt64LE() };
      } finally {
        obj.close();
      }
    };
    expect(run()).toEqual({ retval: TC_ACT_OK, byte: 7n, wide: 1n });
    expect(run({ fx_verdict: TC_ACT_REDIRECT }).retval).toBe(TC_ACT_REDIRECT);
    expect(run({ fx_min_len: 1000 }).retval).toBe(TC_ACT_SHOT);
    expect(run({ fx_min_len: 10 }).retval).toBe(TC_ACT_OK);
    const big = (1n << 40n) + 5n;
    expect(run({ fx_byte: 200, fx_wide: big })).toEqual({ retval: TC_ACT_OK, byte: 200n, wide: big });
    expect(run({ fx_verdict: Buffer.from([7, 0, 0, 0]) }).retval).toBe(TC_ACT_REDIRECT);
  });

  it('rejects unknown constants and values that do not fit', () => {
    const file = fixture('maps');
    let e = caught(() => loadObject(file, { constants: { fx_nope: 1 } }));
    expect(e.code).toBe('EINVAL');
    expect(e.message).toBe(
      `set constants of ${file}: "fx_nope" is not a .rodata constant (known: fx_verdict, fx_min_len, fx_byte, fx_wide)`,
    );
    e = caught(() => loadObject(file, { constants: { fx_verdict: Buffer.alloc(2) } }));
    expect(e.message).toBe(`set constants of ${file}: fx_verdict is 4 bytes; a 2-byte Buffer was given`);
    e = caught(() => loadObject(file, { constants: { fx_byte: 256 } }));
    expect(e.message).toBe(`set constants of ${file}: fx_byte is 1 byte; 256 does not fit`);
    e = caught(() => loadObject(file, { constants: { fx_byte: 1.5 } }));
    expect(e.message).toBe(`set constants of ${file}: fx_byte must be an integer, bigint, boolean or Buffer, got 1.5`);
  });

  it('sizes maps with maxEntries before the load: the kernel map has that size and refuses one more', () => {
    const obj = loadObject(fixture('maps'), { maxEntries: { fx_hash: 3 } });
    try {
      expect(obj.mapInfo('fx_hash').maxEntries).toBe(3);
      const m = obj.map('fx_hash');
      expect(m.maxEntries).toBe(3);
      for (let i = 0; i < 3; i++) m.update(u32(i), u64(BigInt(i)));
      expect(caught(() => m.update(u32(3), u64(3n))).code).toBe('E2BIG');
      expect(obj.mapInfo('fx_percpu').maxEntries).toBe(4);
    } finally {
      obj.close();
    }
  });

  it('refuses maxEntries it cannot honour, with exact messages', () => {
    const file = fixture('maps');
    let e = caught(() => loadObject(file, { maxEntries: { fx_nope: 3 } }));
    expect(e.code).toBe('EINVAL');
    expect(e.message).toBe(`set max_entries of ${file}: "fx_nope" is not a map of the object (maps: fx_percpu, fx_hash, fx_percpu_hash, fx_pinned, fx_array)`);
    e = caught(() => loadObject(file, { maxEntries: { fx_hash: 0 } }));
    expect(e.message).toBe(`load ${file}: maxEntries.fx_hash must be an integer from 1 to 2147483647, got 0`);
    e = caught(() => loadObject(file, { maxEntries: { fx_hash: 2.5 } }));
    expect(e.message).toBe(`load ${file}: maxEntries.fx_hash must be an integer from 1 to 2147483647, got 2.5`);
  });

  it('pins maps by name under pinRoot and re-uses the pins on the next load', () => {
    const pinRoot = mountBpffs();
    const first = loadObject(fixture('maps'), { pinRoot });
    expect(existsSync(path.join(pinRoot, 'fx_pinned'))).toBe(true);
    expect(existsSync(path.join(pinRoot, 'fx_hash'))).toBe(false);
    first.map('fx_pinned').update(u32(9), u64(0xfeedn));
    first.close();

    const second = loadObject(fixture('maps'), { pinRoot });
    try {
      expect(second.map('fx_pinned').lookup(u32(9))?.readBigUInt64LE()).toBe(0xfeedn);
      expect(second.map('fx_pinned').id).toBe(openPinnedMap(path.join(pinRoot, 'fx_pinned')).id);
    } finally {
      second.close();
    }
    // A different pin root is a different map.
    const other = loadObject(fixture('maps'), { pinRoot: mountBpffs() });
    try {
      expect(other.map('fx_pinned').lookup(u32(9))).toBeUndefined();
    } finally {
      other.close();
    }
  });

  it('puts the verifier log into the error when a program is rejected', () => {
    const warnings: string[] = [];
    const logger = { warn: (_: object, msg: string) => warnings.push(msg), debug: () => {} };
    const e = caught(() => loadObject(fixture('reject'), { logger }));
    expect(e.operation).toBe(`load ${fixture('reject')}`);
    expect(e.code).toBe('EACCES');
    expect(e.errno).toBe(13);
    expect(e.message).toMatch(/^load .*fixture_reject\.o: EACCES/);
    expect(e.verifierLog).toMatch(/invalid access to packet/);
    expect(warnings.some((w) => /fx_oob_read/.test(w))).toBe(true);
  });

  it('sends libbpf debug lines to the logger', () => {
    const debug: string[] = [];
    const obj = loadObject(fixture('maps'), { logger: { warn: () => {}, debug: (_: object, m: string) => debug.push(m) } });
    obj.close();
    expect(debug.some((l) => l.includes('fx_classify') || l.includes('fixture_maps'))).toBe(true);
  });

  it('throws the one error shape for a missing file', () => {
    const e = caught(() => loadObject('/nonexistent/kelp.o'));
    expect(e).toMatchObject({ errno: 2, code: 'ENOENT', operation: 'open /nonexistent/kelp.o' });
    expect(e.message).toBe('open /nonexistent/kelp.o: ENOENT (No such file or directory)');
    expect(e.verifierLog).toBeUndefined();
  });

  it('closes handed-out handles with the object, and twice without harm', () => {
    const obj = loadObject(fixture('maps'));
    const map = obj.map('fx_hash');
    const prog = obj.program('fx_classify');
    obj.close();
    obj.close();
    expect(map.fd).toBe(-1);
    expect(prog.fd).toBe(-1);
    expect(caught(() => map.lookup(u32(1))).code).toBe('EBADF');
    expect(caught(() => obj.map('fx_hash')).message).toMatch(/the object is closed/);
  });
});

describe('btfStructLayout', () => {
  it('reads sizes and offsets from the object BTF', () => {
    expect(btfStructLayout(fixture('maps'), 'fx_layout')).toEqual({
      kind: 'struct',
      size: 24,
      members: [
        { name: 'tag', offset: 0, size: 1 },
        { name: 'count', offset: 4, size: 4 },
        { name: 'bytes', offset: 8, size: 8 },
        { name: 'mac', offset: 16, size: 6 },
      ],
    });
    expect(btfStructLayout(fixture('maps'), 'fx_val').size).toBe(12);
  });

  it('fails with ENOENT for an unknown struct', () => {
    const e = caught(() => btfStructLayout(fixture('maps'), 'no_such_struct'));
    expect(e.code).toBe('ENOENT');
    expect(e.operation).toBe(`find struct no_such_struct in BTF of ${fixture('maps')}`);
  });
});

describe('btfEnum', () => {
  // test/fixtures/bpf/enums.c: every enum encoding BTF has.
  const obj = fixture('enums');

  it('reads enumerators with their sign and width', () => {
    expect(btfEnum(obj, 'fx_signed')).toEqual({ FX_NEG: -7, FX_ZERO: 0, FX_POS: 3 });
    expect(btfEnum(obj, 'fx_unsigned')).toEqual({ FX_U32_MAX: 0xffffffff });
    expect(btfEnum(obj, 'fx_wide')).toEqual({ FX_WIDE_NEG: -(2 ** 40), FX_WIDE_POS: 2 ** 40 });
  });

  it('refuses a value a number cannot hold exactly', () => {
    const e = caught(() => btfEnum(obj, 'fx_huge'));
    expect(e.code).toBe('ERANGE');
    expect(e.operation).toBe('read enum fx_huge value FX_HUGE');
  });

  it('reads a kelp object, and BpfObject offers the same', () => {
    const lxc = path.join(__dirname, '../../build/bpf/lxc.o');
    expect(btfEnum(lxc, 'kelp_dir')).toEqual({ KELP_DIR_FROM_POD: 1, KELP_DIR_TO_POD: 2 });
    const o = loadObject(fixture('maps'));
    try {
      expect(caught(() => o.btfEnum('no_such_enum')).operation).toBe(`find enum no_such_enum in BTF of ${fixture('maps')}`);
    } finally {
      o.close();
    }
  });

  it('fails with ENOENT for a name that is not an enum', () => {
    const e = caught(() => btfEnum(fixture('maps'), 'fx_layout'));
    expect(e.code).toBe('ENOENT');
    expect(e.operation).toBe(`find enum fx_layout in BTF of ${fixture('maps')}`);
  });
});
