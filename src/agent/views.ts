// The shapes the agent's API answers with (`kelp get … -o json` prints them as they are).
export interface EndpointView {
  id: number;
  network: string;
  containerId: string;
  ifname: string;
  /** Addresses with prefix, comma-separated. */
  ip: string;
  hostIfname: string;
  hostIfindex: number;
  /** `namespace/name` when the runtime sent K8S_POD_NAMESPACE / K8S_POD_NAME, else null. */
  pod: string | null;
  state: string;
}

export interface PodView {
  /** null for a pod that arrived by CNI without K8S_POD_NAMESPACE. */
  namespace: string | null;
  name: string;
  ip?: string;
  interface?: string;
  containerId?: string;
  state: string;
  labels: Record<string, string>;
}

/** One non-zero datapath counter (`kelp get counters`). Numbers are decimal strings (64-bit). */
export interface CounterView {
  endpoint: number;
  pod: string | null;
  direction: 'from-pod' | 'to-pod';
  /** 'forwarded' or a drop reason name. */
  reason: string;
  packets: string;
  bytes: string;
}
