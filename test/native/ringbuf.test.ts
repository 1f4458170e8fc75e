// Ring buffer records reach the JS callback from the event loop: a program run by testRun writes
// one record per packet.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BpfObject, KelpBpfError, loadObject, openRingBuffer, RingBuffer } from '../../src/bpf';

const fixture = (name: string) => path.join(__dirname, '../../build/bpf', `fixture_${name}.o`);

let obj: BpfObject;
beforeEach(() => {
  obj = loadObject(fixture('pkt'));
});
afterEach(() => obj.close());

function frame(tag: number, len = 60): Buffer {
  const f = Buffer.alloc(len);
  Buffer.from('02000000000102000000000208', 'hex').copy(f);
  f[12] = 0x08;
  f[13] = 0x00;
  f[0] = tag;
  return f;
}

// struct fx_event { __u32 len; __u32 seq; __u8 head[14]; } padded to 24 by the 4-byte alignment.
function parse(rec: Buffer) {
  return { len: rec.readUInt32LE(0), seq: rec.readUInt32LE(4), head: rec.subarray(8, 22) };
}

/** Resolves once n records have arrived. */
function collect(rb: (cb: (r: Buffer) => void) => RingBuffer, n: number) {
  const records: Buffer[] = [];
  let handle!: RingBuffer;
  const done = new Promise<Buffer[]>((resolve) => {
    handle = rb((r) => {
      records.push(r);
      if (records.length === n) resolve(records);
    });
  });
  return { handle, done, records };
}

describe('openRingBuffer', () => {
  it('delivers each record as its own Buffer, in order', async () => {
    const prog = obj.program('fx_event');
    const { handle, done } = collect((cb) => openRingBuffer(obj.map('fx_events'), cb), 3);
    try {
      prog.testRun({ data: frame(0x11, 60) });
      prog.testRun({ data: frame(0x22, 70) });
      prog.testRun({ data: frame(0x33, 80) });
      const records = (await done).map(parse);
      expect(records.map((r) => r.len)).toEqual([60, 70, 80]);
      expect(records.map((r) => r.seq)).toEqual([1, 2, 3]);
      expect(records.map((r) => r.head[0])).toEqual([0x11, 0x22, 0x33]);
      expect(records[0].head).toEqual(frame(0x11).subarray(0, 14));
    } finally {
      handle.close();
    }
  });

  it('stops delivering once closed, and closing twice is harmless', async () => {
    const prog = obj.program('fx_event');
    const { handle, done, records } = collect((cb) => openRingBuffer(obj.map('fx_events'), cb), 1);
    prog.testRun({ data: frame(1) });
    await done;
    handle.close();
    handle.close();
    prog.testRun({ data: frame(2) });

    // The record written after close is still in the ring: the closed consumer never read it.
    const next = collect((cb) => openRingBuffer(obj.map('fx_events'), cb), 1);
    try {
      expect(parse((await next.done)[0]).head[0]).toBe(2);
      expect(records).toHaveLength(1);
    } finally {
      next.handle.close();
    }
  });

  it('lets a callback close its own ring buffer', async () => {
    const prog = obj.program('fx_event');
    const seen: number[] = [];
    let closedBy!: () => void;
    const closed = new Promise<void>((r) => (closedBy = r));
    const rb = openRingBuffer(obj.map('fx_events'), (r) => {
      seen.push(parse(r).head[0]);
      rb.close();
      closedBy();
    });
    prog.testRun({ data: frame(5) });
    prog.testRun({ data: frame(6) });
    await closed;
    // Records read in the same batch as the closing one are dropped, never delivered late.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual([5]);
  });

  it('refuses a map that is not a ring buffer', () => {
    expect(() => openRingBuffer(obj.map('fx_counts'), () => {})).toThrow(KelpBpfError);
    expect(() => openRingBuffer(obj.map('fx_counts'), () => {})).toThrow(
      'open ring buffer fx_counts: not a ring buffer map (type 2)',
    );
  });
});
