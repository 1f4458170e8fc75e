// ADD through the real kelp-cni and agent in every supported cniVersion: the result document
// (checklist §4 items 25–27, §5 items 28, 30–31, §9 item 60) and the state behind it — the pod's
// interface, address and routes as the kernel shows them, the node route, the kelp_endpoints
// entry, the IPAM lease, and `kelp get pods`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '../../src/sandbox';
import { SUPPORTED_VERSIONS } from '../../src/cni/version';
import { execCni } from '../support/cni-exec';
import {
  Attachment, NETWORK, addresses, endpointEntry, hostIfnameFor, ipJson, leases, mustAdd, newAttachment, recordOf, startSandbox,
} from '../support/e2e';

let sb: Sandbox;

beforeAll(async () => {
  sb = await startSandbox('e2v');
});

afterAll(async () => {
  await sb?.stop();
});

describe('ADD result in each cniVersion', () => {
  const MTU = 1450;
  it.each(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'])('%s', async (v) => {
    const a: Attachment = newAttachment(sb);
    const result = await mustAdd(sb, a, { args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=ns-${v};K8S_POD_NAME=pod-${v}`, config: sb.pluginConfig({ cniVersion: v, mtu: MTU }) });
    const v1 = v.startsWith('1.');
    const hostIfname = hostIfnameFor(NETWORK, a.containerId, 'eth0');
    const [host] = ipJson(sb.node, 'link', 'show', 'dev', hostIfname);
    const [pod] = ipJson(a.netns, 'link', 'show', 'dev', 'eth0');
    const address = result.ips?.[0]?.address as string;
    expect(address).toMatch(/^10\.244\.0\.\d+\/24$/);
    const ip = address.split('/')[0];

    expect(result).toEqual({
      cniVersion: v,
      interfaces: [
        { name: hostIfname, mac: host.address },
        { name: 'eth0', mac: pod.address, sandbox: a.netnsPath, ...(v1 ? { mtu: MTU } : {}) },
      ],
      ips: [{ ...(v1 ? {} : { version: '4' }), interface: 1, address, gateway: '10.244.0.1' }],
      routes: [{ dst: '0.0.0.0/0', gw: '10.244.0.1' }],
    });

    // The pod as the kernel sees it matches the result.
    expect(pod.mtu).toBe(MTU);
    expect(pod.flags).toContain('UP');
    // eth0 is the peer of the host veth.
    expect(pod.link_index).toBe(host.ifindex);
    expect(host.link_index).toBe(pod.ifindex);
    expect(addresses(a.netns, 'eth0')).toEqual([address]);
    const routes = ipJson(a.netns, '-4', 'route', 'show', 'default');
    expect(routes).toEqual([expect.objectContaining({ dst: 'default', gateway: '10.244.0.1', dev: 'eth0' })]);
    // The node reaches the pod through its host veth.
    expect(host.mtu).toBe(MTU);
    expect(ipJson(sb.node, 'route', 'show', `${ip}/32`)).toEqual([expect.objectContaining({ dst: ip, dev: hostIfname })]);

    const rec = recordOf(sb, a)!;
    expect(rec).toMatchObject({ network: NETWORK, netns: a.netnsPath, hostIfname, hostIfindex: host.ifindex, podMac: pod.address, hostMac: host.address, mtu: MTU });
    expect(rec.pod).toEqual({ namespace: `ns-${v}`, name: `pod-${v}` });
    expect(endpointEntry(sb, ip)?.value).toEqual({ ifindex: host.ifindex, epId: rec.id, flags: 0, mac: pod.address, nodeMac: host.address });
    expect(leases(sb)[ip]).toBe(`${a.containerId}/eth0`);

    const pods = JSON.parse(sb.kelp('get', 'pods', '-o', 'json')) as Array<Record<string, unknown>>;
    expect(pods).toContainEqual(expect.objectContaining({ namespace: `ns-${v}`, name: `pod-${v}`, ip, containerId: a.containerId, interface: `eth0@${hostIfname}` }));
  });

  it('0.1.0 and 0.2.0 are refused with code 1 and nothing is created', async () => {
    for (const v of ['0.1.0', '0.2.0']) {
      const a = newAttachment(sb);
      const res = await sb.cni('ADD', { CNI_CONTAINERID: a.containerId, CNI_NETNS: a.netnsPath, CNI_IFNAME: 'eth0' }, sb.pluginConfig({ cniVersion: v }));
      expect(res.code).not.toBe(0);
      expect(res.json).toMatchObject({ cniVersion: v, code: 1 });
      expect(recordOf(sb, a)).toBeUndefined();
    }
  });
});

describe('VERSION', () => {
  it('is answered by kelp-cni without any agent', async () => {
    // Not the sandbox's plugin config: no agent socket exists at this path.
    const res = await execCni({ env: { CNI_COMMAND: 'VERSION', KELP_AGENT_SOCKET: '/nonexistent/kelp.sock' }, stdin: '{"cniVersion":"1.1.0","agentSocket":"/nonexistent/kelp.sock"}' });
    expect(res.code).toBe(0);
    expect(res.json).toEqual({ cniVersion: '1.1.0', supportedVersions: [...SUPPORTED_VERSIONS] });
  });

  it('lists exactly the versions ADD accepts', () => {
    expect([...SUPPORTED_VERSIONS]).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });
});
