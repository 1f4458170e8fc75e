// The agent's flow store: the last records in a ring (4,096 by default), and subscribers that hear
// each new one (the follow streams of GET /v1/flows, the node page).
import type { FlowRecord } from '../datapath/flow-types';

export const FLOW_STORE_CAPACITY = 4096;

export type FlowSubscriber = (rec: FlowRecord) => void;

export class FlowStore {
  private readonly ring: FlowRecord[] = [];
  /** Index of the oldest record once the ring is full. */
  private head = 0;
  private readonly subscribers = new Set<FlowSubscriber>();
  /** Records ever added (the ring keeps the last `capacity`). */
  added = 0;

  constructor(readonly capacity = FLOW_STORE_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`flow store capacity must be a positive integer, got ${capacity}`);
  }

  add(rec: FlowRecord): void {
    if (this.ring.length < this.capacity) this.ring.push(rec);
    else {
      this.ring[this.head] = rec;
      this.head = (this.head + 1) % this.capacity;
    }
    this.added += 1;
    for (const fn of this.subscribers) fn(rec);
  }

  /** Every stored record, oldest first. */
  all(): FlowRecord[] {
    return this.ring.length < this.capacity ? this.ring.slice() : [...this.ring.slice(this.head), ...this.ring.slice(0, this.head)];
  }

  /** The last `n` stored records that `match`, oldest first. */
  last(n: number, match: (rec: FlowRecord) => boolean = () => true): FlowRecord[] {
    const out: FlowRecord[] = [];
    const all = this.all();
    for (let i = all.length - 1; i >= 0 && out.length < n; i--) if (match(all[i])) out.push(all[i]);
    return out.reverse();
  }

  /** Hears every record added from now on; returns the unsubscribe call. */
  subscribe(fn: FlowSubscriber): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}
