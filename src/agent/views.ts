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
  /** `namespace/name` when the runtime sent K8S_POD_NAMESPACE / K8S_POD_NAME. */
  pod?: string;
  state: string;
}

export interface PodView {
  namespace: string;
  name: string;
  ip?: string;
  interface?: string;
  containerId?: string;
  state: string;
  labels: Record<string, string>;
}
