// What the API routes read: the agent's parts, wired in src/agent/agent.ts.
import type { AgentOptions } from '../options';
import type { EndpointManager } from '../../endpoint/manager';
import type { Datapath } from '../../datapath/loader';
import type { ObjectStore } from '../../sources/store';
import type { ManifestDir } from '../../sources/manifests';
import type { KubernetesSource } from '../../sources/kubernetes';
import type { StateSource } from '../../sources/source';
import type { ReconcileLoop } from '../../reconcile/loop';
import type { AgentPolicy } from '../policy';
import type { AgentServices } from '../services';
import type { AgentNodes } from '../nodes';

export interface RouteContext {
  /** The options in effect (pod CIDR and MTU resolved). */
  opts: AgentOptions & { podCidr: string; mtu: number };
  manager: EndpointManager;
  datapath: Datapath;
  objects: ObjectStore;
  manifests?: ManifestDir;
  kube?: KubernetesSource;
  sources: StateSource[];
  reconcilers: ReconcileLoop;
  policy?: AgentPolicy;
  services?: AgentServices;
  nodes?: AgentNodes;
  /** Serving CNI: restore is done and the socket listens. */
  ready(): boolean;
  masquerade(): { uplink: string; address: string } | null;
}
