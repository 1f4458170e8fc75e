// What the datapath knows of the layers above it: the few fields of an endpoint it programs
// and checks. The endpoint layer's records carry these and more; the datapath never imports
// them (layers import downwards only).

/** How a pod's host veth is hooked: clsact filters at kelp's handle (default) or pinned tcx links. */
export type PodHook = 'clsact' | 'tcx';

export interface DatapathEndpoint {
  /** Endpoint id: metrics and events are keyed by it. */
  id: number;
  ips: ReadonlyArray<{ address: string }>;
  hostIfindex: number;
  hostIfname: string;
  podMac: string;
  hostMac: string;
  hook?: PodHook;
}
