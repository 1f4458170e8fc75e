// BPF_PROG_TEST_RUN through the addon: verdicts, output bytes, context, repeat.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfObject, loadObject } from '../../src/bpf';
import { caught } from '../support/bpf-error';

const fixture = (name: string) => path.join(__dirname, '../../build/bpf', `fixture_${name}.o`);

let obj: BpfObject;
beforeAll(() => {
  obj = loadObject(fixture('pkt'));
});
afterAll(() => obj?.close());

// dst 02:00:00:00:00:01, src 02:00:00:00:00:02, IPv4 ethertype, a recognisable payload.
function frame(): Buffer {
  return Buffer.concat([
    Buffer.from('020000000001', 'hex'),
    Buffer.from('020000000002', 'hex'),
    Buffer.from('0800', 'hex'),
    Buffer.from('payload that must come back unchanged, 46 bytes', 'latin1').subarray(0, 46),
  ]);
}

describe('testRun', () => {
  it('returns the packet as the program left it', () => {
    const input = frame();
    const r = obj.program('fx_swap_mac').testRun({ data: input });
    expect(r.retval).toBe(0);
    expect(r.data).toHaveLength(input.length);
    expect(r.data.subarray(0, 6)).toEqual(Buffer.from('020000000002', 'hex'));
    expect(r.data.subarray(6, 12)).toEqual(Buffer.from('020000000001', 'hex'));
    expect(r.data.subarray(12)).toEqual(input.subarray(12));
    expect(input.subarray(0, 6)).toEqual(Buffer.from('020000000001', 'hex'));
    expect(typeof r.duration).toBe('number');
  });

  it('repeats runs', () => {
    const counts = obj.map('fx_counts');
    const key = Buffer.alloc(4); // FX_TC
    const before = counts.lookup(key)!.readBigUInt64LE();
    obj.program('fx_count_tc').testRun({ data: frame(), repeat: 7 });
    expect(counts.lookup(key)!.readBigUInt64LE() - before).toBe(7n);
  });

  it('passes struct __sk_buff in and out', () => {
    // struct __sk_buff: mark at offset 8; the kernel accepts a ctx that sets it.
    const ctx = Buffer.alloc(192);
    ctx.writeUInt32LE(0x1234, 8);
    const r = obj.program('fx_swap_mac').testRun({ data: frame(), ctx });
    expect(r.ctx).toHaveLength(192);
    expect(r.ctx!.readUInt32LE(8)).toBe(0x1234);
  });

  it('fails with ENOSPC naming the output size when dataSizeOut is too small', () => {
    const e = caught(() => obj.program('fx_swap_mac').testRun({ data: frame(), dataSizeOut: 10 }));
    expect(e.code).toBe('ENOSPC');
    expect(e.message).toMatch(/^test run \(output is 60 bytes, dataSizeOut is 10\): ENOSPC/);
  });

  it('validates options before the kernel', () => {
    expect(() => obj.program('fx_swap_mac').testRun({ data: frame(), repeat: 0 })).toThrow(
      'test run fx_swap_mac: repeat must be a positive integer, got 0',
    );
    expect(() => obj.program('fx_swap_mac').testRun({ data: 'x' as unknown as Buffer })).toThrow(
      'test run fx_swap_mac: data must be a Buffer',
    );
  });
});
