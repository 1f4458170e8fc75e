// A minimal CRI v1 client (gRPC over the runtime's unix socket) for the runtime tests: the calls
// kubelet makes to run a pod, with the message subset in cri-v1.proto. Field names are the
// proto's in lowerCamel (proto-loader's default); enums travel as their names.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface PortMapping {
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  containerPort: number;
  hostPort: number;
  hostIp?: string;
}

export interface PodSandboxConfig {
  metadata: { name: string; namespace: string; uid: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: PortMapping[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: { network?: 'POD' | 'NODE' } } };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  envs?: Array<{ key: string; value: string }>;
  labels?: Record<string, string>;
  logPath?: string;
}

export interface PodSandboxStatus {
  id: string;
  metadata: { name: string; namespace: string; uid: string };
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network?: { ip: string; additionalIps: Array<{ ip: string }> } | null;
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exitCode: number;
  reason: string;
  message: string;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

type Unary = (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

let definition: protoLoader.PackageDefinition | undefined;

function services(): { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor } {
  definition ??= protoLoader.loadSync(path.join(__dirname, 'cri-v1.proto'), { enums: String, longs: Number, defaults: true, arrays: true });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { runtime: { v1: Record<string, grpc.ServiceClientConstructor> } };
  return { RuntimeService: pkg.runtime.v1.RuntimeService, ImageService: pkg.runtime.v1.ImageService };
}

export class CriClient {
  private readonly runtime: grpc.Client;
  private readonly image: grpc.Client;

  /** `socket`: the runtime's gRPC unix socket (containerd's `[grpc] address`). */
  constructor(readonly socket: string) {
    const { RuntimeService, ImageService } = services();
    // The socket is local; a cleartext channel is what kubelet uses too.
    this.runtime = new RuntimeService(`unix:${socket}`, grpc.credentials.createInsecure());
    this.image = new ImageService(`unix:${socket}`, grpc.credentials.createInsecure());
  }

  close(): void {
    this.runtime.close();
    this.image.close();
  }

  private call<T>(client: grpc.Client, method: string, req: unknown, timeoutMs = 60_000): Promise<T> {
    const fn = (client as unknown as Record<string, Unary>)[method].bind(client);
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new Error(`CRI ${method}: ${err.details || err.message}`));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    return this.call(this.runtime, 'Version', { version: 'v1' }, 5_000);
  }

  /** Runtime conditions by type (RuntimeReady, NetworkReady) and, verbose, containerd's info. */
  async status(): Promise<{ conditions: Record<string, { status: boolean; reason: string; message: string }>; info: Record<string, string> }> {
    const res = await this.call<{ status: { conditions: Array<{ type: string; status: boolean; reason: string; message: string }> }; info: Record<string, string> }>(this.runtime, 'Status', { verbose: true });
    return { conditions: Object.fromEntries(res.status.conditions.map((c) => [c.type, c])), info: res.info };
  }

  async imagePresent(image: string): Promise<boolean> {
    const res = await this.call<{ image: unknown }>(this.image, 'ImageStatus', { image: { image } });
    return !!res.image;
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    const res = await this.call<{ podSandboxId: string }>(this.runtime, 'RunPodSandbox', { config });
    return res.podSandboxId;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { podSandboxId: id });
  }

  /** The sandbox's status and containerd's verbose info (parsed JSON). */
  async podSandboxStatus(id: string): Promise<{ status: PodSandboxStatus; info: Record<string, unknown> }> {
    const res = await this.call<{ status: PodSandboxStatus; info: Record<string, string> }>(this.runtime, 'PodSandboxStatus', { podSandboxId: id, verbose: true });
    const info = Object.fromEntries(Object.entries(res.info).map(([k, v]) => [k, JSON.parse(v) as unknown]));
    return { status: res.status, info };
  }

  async listPodSandboxes(): Promise<PodSandboxStatus[]> {
    const res = await this.call<{ items: PodSandboxStatus[] }>(this.runtime, 'ListPodSandbox', {});
    return res.items;
  }

  async createContainer(sandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    const res = await this.call<{ containerId: string }>(this.runtime, 'CreateContainer', { podSandboxId: sandboxId, config, sandboxConfig });
    return res.containerId;
  }

  async startContainer(id: string): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { containerId: id });
  }

  async stopContainer(id: string, timeoutSeconds = 0): Promise<void> {
    await this.call(this.runtime, 'StopContainer', { containerId: id, timeout: timeoutSeconds });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call(this.runtime, 'RemoveContainer', { containerId: id });
  }

  async containerStatus(id: string): Promise<ContainerStatus> {
    const res = await this.call<{ status: ContainerStatus }>(this.runtime, 'ContainerStatus', { containerId: id });
    return res.status;
  }

  /** Runs a command in a container (CRI ExecSync: no streaming server involved). */
  async exec(containerId: string, cmd: string[], timeoutSeconds = 10): Promise<ExecResult> {
    const res = await this.call<{ stdout: Buffer; stderr: Buffer; exitCode: number }>(
      this.runtime,
      'ExecSync',
      { containerId, cmd, timeout: timeoutSeconds },
      (timeoutSeconds + 10) * 1000,
    );
    return { exitCode: res.exitCode, stdout: res.stdout.toString(), stderr: res.stderr.toString() };
  }
}
