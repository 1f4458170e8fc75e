// A source of desired state: something that fills the object store (a watched manifest
// directory, the Kubernetes API). The agent starts every source, then waits for all of them to
// have synced — delivered their whole initial state — before anything reconciles or garbage-
// collects: a map written from a half-listed store would delete what the rest of the list holds.
export interface StateSource {
  /** Names the source in logs and `kelp status` (e.g. `manifests:/etc/kelp/manifests`). */
  readonly name: string;
  /** Begins feeding the store. Resolves once started, not necessarily synced. */
  start(): Promise<void>;
  /** Resolves once the source's initial state is in the store (at once for a synced source). */
  synced(): Promise<void>;
  stop(): Promise<void>;
}

/** Resolves when every source has synced. */
export async function allSynced(sources: readonly StateSource[]): Promise<void> {
  await Promise.all(sources.map((s) => s.synced()));
}
