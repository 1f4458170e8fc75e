// The agent's side of several nodes, without a kernel: the routing flags and their errors, the
// pod MTU each mode gives, the conflist stating the node's routing in the seeds' VXLAN fields,
// and those fields in a network config (read, checked against the agent, gbp refused).
import { describe, expect, it } from 'vitest';
import { parseAgentArgs, UsageError } from '../../src/agent/options';
import { podMtuFor } from '../../src/agent/nodes';
import { buildConflist } from '../../src/agent/install';
import { routingMismatch } from '../../src/agent/cni-handler';
import { parseConfig } from '../../src/cni/config';
import { CniError } from '../../src/cni/errors';

describe('routing flags', () => {
  it('default to VXLAN on VNI 1, port 8472, no --mtu (derived)', () => {
    expect(parseAgentArgs([])).toMatchObject({ routingMode: 'vxlan', vxlanId: 1, vxlanPort: 8472 });
    expect(parseAgentArgs([]).mtu).toBeUndefined();
    expect(parseAgentArgs(['--routing-mode=native', '--vxlan-id', '42', '--vxlan-port=4789', '--mtu=9000'])).toMatchObject({ routingMode: 'native', vxlanId: 42, vxlanPort: 4789, mtu: 9000 });
  });

  it.each([
    [['--routing-mode=geneve'], '--routing-mode must be one of vxlan, native, got "geneve"'],
    [['--vxlan-id=16777216'], '--vxlan-id must be in 1..16777215, got 16777216'],
    [['--vxlan-id=0'], '--vxlan-id must be a positive integer, got "0"'],
    [['--vxlan-port=70000'], '--vxlan-port must be in 1..65535, got 70000'],
    [['--mtu=100'], '--mtu must be in 576..65535, got 100'],
  ])('%j: %s', (args, message) => {
    expect(() => parseAgentArgs(args)).toThrow(UsageError);
    expect(() => parseAgentArgs(args)).toThrow(message);
  });
});

describe('pod MTU', () => {
  it("is the uplink's less 50 in VXLAN mode, the uplink's natively, --mtu whatever the mode", () => {
    expect(podMtuFor({ routingMode: 'vxlan' }, 1500)).toBe(1450);
    expect(podMtuFor({ routingMode: 'vxlan' }, 9001)).toBe(8951);
    expect(podMtuFor({ routingMode: 'native' }, 1500)).toBe(1500);
    expect(podMtuFor({ routingMode: 'vxlan', mtu: 1400 }, 1500)).toBe(1400);
    // No uplink found (no default route): as if it were 1500.
    expect(podMtuFor({ routingMode: 'vxlan' }, undefined)).toBe(1450);
  });
});

describe("the seeds' VXLAN fields", () => {
  const base = { cniVersion: '1.0.0', name: 'kelp', type: 'kelp-cni' };
  const vxlan = { mode: 'vxlan' as const, vni: 1, port: 8472 };

  it('the installed conflist states the node routing in them', () => {
    const conf = (routing: Parameters<typeof buildConflist>[0]['routing']) =>
      (buildConflist({ networkName: 'kelp', socketPath: '/run/kelp/kelp.sock', mtu: 1450, podCidr: '10.244.0.0/24', masquerade: true, routing }).plugins as Array<Record<string, unknown>>)[0];
    expect(conf(vxlan)).toMatchObject({ vxlanId: 1, port: 8472, directRouting: false, mtu: 1450 });
    const native = conf({ mode: 'native', vni: 1, port: 8472 });
    expect(native.directRouting).toBe(true);
    expect(native).not.toHaveProperty('vxlanId');
    // And it parses back as a network config that agrees with the agent.
    expect(routingMismatch(parseConfig({ ...base, ...conf(vxlan) }), vxlan)).toBeUndefined();
  });

  it('are read and range-checked; gbp: true is refused, naming the field and why', () => {
    expect(parseConfig({ ...base, vxlanId: 7, port: 4789, directRouting: false, gbp: false })).toMatchObject({ vxlanId: 7, port: 4789, directRouting: false });
    const err = (doc: Record<string, unknown>) => {
      try {
        parseConfig({ ...base, ...doc });
      } catch (e) {
        return e as CniError;
      }
      throw new Error('parsed');
    };
    expect(err({ gbp: true })).toMatchObject({ code: 7, msg: 'invalid gbp' });
    expect(err({ gbp: true }).details).toMatch(/VXLAN-GBP is not supported: .*ip cache/);
    expect(err({ vxlanId: 0 })).toMatchObject({ code: 7, msg: 'invalid vxlanId' });
    expect(err({ port: 65536 })).toMatchObject({ code: 7, msg: 'invalid port' });
    expect(err({ directRouting: 'yes' })).toMatchObject({ code: 7, msg: 'invalid directRouting' });
  });

  it("an ADD whose config disagrees with the agent's flags is refused with the field and the flag", () => {
    expect(routingMismatch({ vxlanId: 2 }, vxlan)).toMatchObject({ code: 7, msg: 'invalid vxlanId', details: expect.stringContaining("--vxlan-id 1") });
    expect(routingMismatch({ port: 4789 }, vxlan)).toMatchObject({ msg: 'invalid port', details: expect.stringContaining('--vxlan-port 8472') });
    expect(routingMismatch({ directRouting: true }, vxlan)).toMatchObject({ msg: 'invalid directRouting', details: expect.stringContaining('--routing-mode vxlan') });
    expect(routingMismatch({ directRouting: false }, { ...vxlan, mode: 'native' })).toMatchObject({ msg: 'invalid directRouting' });
    // Natively, the VXLAN fields mean nothing and are not compared.
    expect(routingMismatch({ vxlanId: 9, port: 1, directRouting: true }, { ...vxlan, mode: 'native' })).toBeUndefined();
    expect(routingMismatch({}, vxlan)).toBeUndefined();
  });
});
