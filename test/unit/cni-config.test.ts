import { describe, expect, it } from 'vitest';
import { decodeConfig, normaliseRuntimeConfig, parseConfig } from '../../src/cni/config';
import { CniError } from '../../src/cni/errors';

const BASE = { cniVersion: '1.0.0', name: 'kelp', type: 'kelp-cni' };

function cniError(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e;
    throw e;
  }
  throw new Error('expected a CniError');
}

function conf(extra: Record<string, unknown>) {
  return parseConfig({ ...BASE, ...extra });
}

describe('decodeConfig', () => {
  it.each([
    ['', 'stdin is empty'],
    [' \n\t', 'stdin is empty'],
    ['{', undefined],
    ['{"a":1}x', undefined],
    ['[]', 'not a JSON object'],
    ['null', 'not a JSON object'],
    ['"text"', 'not a JSON object'],
  ])('%j → code 6', (text, details) => {
    const err = cniError(() => decodeConfig(Buffer.from(text)));
    expect(err.code).toBe(6);
    expect(err.msg).toBe('cannot decode network config');
    if (details !== undefined) expect(err.details).toBe(details);
  });

  it('returns the object', () => {
    expect(decodeConfig(Buffer.from(JSON.stringify(BASE)))).toEqual(BASE);
  });

  // What kelp-cni reads too: the last top-level cniVersion string complete and well-formed
  // before the first syntax error (or, for a document with data after it, anywhere in it).
  it.each([
    ['{"cniVersion":"1.0.0"', '1.0.0'],
    ['{"cniVersion":"1.0.0","name":"n" "type":"t"}', '1.0.0'],
    ['{"a":{"b":[1,-2.5e3,{"c":"]}"},true,null]},"cniVersion":"0.3.1",', '0.3.1'],
    ['{"cniVersion":"1.0.0","cniVersion":"0.4.0"', '0.4.0'],
    ['{"cniVersion":"1.\\u0030.0"} x', '1.0.0'],
    ['{"cniVersion":"1.0.0"}{}', '1.0.0'],
    ['{"cniVersion":"1.0.0","cniVersion":5,', undefined],
    ['{"cniVersion":""', undefined],
    ['{"cniVersion":"1.0.0', undefined],
    ['{"a":01,"cniVersion":"1.0.0"}', undefined],
    ['{"a":[1,}],"cniVersion":"1.0.0"}', undefined],
    ['{"a":"\\u00","cniVersion":"1.0.0"}', undefined],
    ['{"ipam":{"cniVersion":"0.4.0"}', undefined],
    ['[{"cniVersion":"1.0.0"}', undefined],
    ['\ufeff{"cniVersion":"1.0.0"}', undefined],
  ])('malformed %j: answered in %j', (text, version) => {
    expect(cniError(() => decodeConfig(Buffer.from(text))).cniVersion).toBe(version);
  });
});

describe('cniVersion, name, type', () => {
  it.each([
    [{ cniVersion: undefined }, 1, 'incompatible CNI versions'],
    [{ cniVersion: '' }, 1, 'incompatible CNI versions'],
    [{ cniVersion: '9.9.9' }, 1, 'incompatible CNI versions'],
    [{ cniVersion: '1.0' }, 1, 'incompatible CNI versions'],
    [{ cniVersion: 1 }, 7, 'invalid cniVersion'],
    [{ name: undefined }, 7, 'missing network name'],
    [{ name: '' }, 7, 'missing network name'],
    [{ name: 'bad name' }, 7, 'invalid name'],
    [{ name: '-x' }, 7, 'invalid name'],
    [{ name: 3 }, 7, 'invalid name'],
    [{ type: undefined }, 7, 'missing plugin type'],
    [{ type: false }, 7, 'invalid type'],
  ])('%j → code %i "%s"', (patch, code, msg) => {
    const err = cniError(() => conf(patch));
    expect([err.code, err.msg]).toEqual([code, msg]);
  });

  it('explains an implicit 0.1.0', () => {
    expect(cniError(() => conf({ cniVersion: undefined })).details).toMatch(/^config is "0.1.0", plugin supports/);
  });

  it.each(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'])('accepts %s', (v) => {
    expect(conf({ cniVersion: v }).cniVersion).toBe(v);
  });

  it.each(['kelp', 'k8s-pod-network', 'a_b.c-1', '0net'])('accepts name %s', (name) => {
    expect(conf({ name }).name).toBe(name);
  });
});

describe("kelp's own fields", () => {
  it('reads them', () => {
    expect(
      conf({ mtu: 1450, ipMasq: true, isGateway: false, isDefaultGateway: true, hairpinMode: false, agentSocket: '/run/kelp/kelp.sock', podHook: 'tcx' }),
    ).toMatchObject({ mtu: 1450, ipMasq: true, isGateway: false, isDefaultGateway: true, hairpinMode: false, agentSocket: '/run/kelp/kelp.sock', podHook: 'tcx' });
  });

  it('leaves absent and null fields undefined', () => {
    const c = conf({ mtu: null, ipMasq: null });
    expect([c.mtu, c.ipMasq, c.isGateway, c.agentSocket, c.ipam, c.prevResult, c.validAttachments, c.podHook]).toEqual(Array(8).fill(undefined));
    expect(c.dns).toEqual({});
    expect(c.runtimeConfig).toEqual({ raw: {} });
  });

  it.each([
    [{ mtu: '1500' }, 'invalid mtu', 'must be an integer from 68 to 65535, got "1500"'],
    [{ mtu: 1500.5 }, 'invalid mtu', undefined],
    [{ mtu: 67 }, 'invalid mtu', undefined],
    [{ mtu: 65536 }, 'invalid mtu', undefined],
    [{ ipMasq: 'true' }, 'invalid ipMasq', 'must be true or false, got "true"'],
    [{ isGateway: 1 }, 'invalid isGateway', undefined],
    [{ isDefaultGateway: 'yes' }, 'invalid isDefaultGateway', undefined],
    [{ hairpinMode: {} }, 'invalid hairpinMode', undefined],
    [{ agentSocket: 'kelp.sock' }, 'invalid agentSocket', undefined],
    [{ agentSocket: '/' + 'x'.repeat(107) }, 'invalid agentSocket', undefined],
    [{ agentSocket: 5 }, 'invalid agentSocket', undefined],
    [{ podHook: 'xdp' }, 'invalid podHook', 'must be "clsact" or "tcx", got "xdp"'],
    [{ dns: [] }, 'invalid dns', undefined],
    [{ dns: { nameservers: '1.1.1.1' } }, 'invalid dns.nameservers', undefined],
    [{ dns: { domain: 1 } }, 'invalid dns.domain', undefined],
  ])('%j → code 7 "%s"', (patch, msg, details) => {
    const err = cniError(() => conf(patch));
    expect([err.code, err.msg]).toEqual([7, msg]);
    if (details !== undefined) expect(err.details).toBe(details);
  });

  it('reads dns', () => {
    expect(conf({ dns: { nameservers: ['10.96.0.10'], domain: 'cluster.local', search: ['svc'], options: ['ndots:5'] } }).dns).toEqual({
      nameservers: ['10.96.0.10'],
      domain: 'cluster.local',
      search: ['svc'],
      options: ['ndots:5'],
    });
  });

  it('ignores unknown top-level keys and keeps the whole document', () => {
    const doc = { ...BASE, foo: 1, plugins: 'x', 'cni.dev/other': {} };
    expect(parseConfig(doc).raw).toBe(doc);
  });
});

describe('ipam (host-local shape)', () => {
  it('reads ranges, the legacy top-level range first, routes and dataDir', () => {
    const ipam = conf({
      ipam: {
        type: 'host-local',
        subnet: '10.22.0.0/16',
        rangeStart: '10.22.1.20',
        rangeEnd: '10.22.3.50',
        gateway: '10.22.0.254',
        ranges: [[{ subnet: '172.16.5.0/24' }, { subnet: '172.16.6.0/24', gateway: '172.16.6.1' }], [{ subnet: 'fd00:1::/64', rangeStart: 'fd00:1::10', rangeEnd: 'fd00:1::20' }]],
        routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.22.5.1' }],
        dataDir: '/run/kelp/ipam',
        custom: true,
      },
    }).ipam!;
    expect(ipam.type).toBe('host-local');
    expect(ipam.ranges).toEqual([
      [{ subnet: '10.22.0.0/16', rangeStart: '10.22.1.20', rangeEnd: '10.22.3.50', gateway: '10.22.0.254' }],
      [{ subnet: '172.16.5.0/24' }, { subnet: '172.16.6.0/24', gateway: '172.16.6.1' }],
      [{ subnet: 'fd00:1::/64', rangeStart: 'fd00:1::10', rangeEnd: 'fd00:1::20' }],
    ]);
    expect(ipam.routes).toEqual([{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.22.5.1' }]);
    expect(ipam.dataDir).toBe('/run/kelp/ipam');
    expect(ipam.raw.custom).toBe(true);
  });

  it('accepts a gateway outside the subnet (link-local next hop for /32 pods)', () => {
    expect(conf({ ipam: { type: 'kelp', ranges: [[{ subnet: '10.0.0.5/32', gateway: '169.254.1.1' }]] } }).ipam!.ranges[0][0].gateway).toBe('169.254.1.1');
  });

  it('accepts an ipam without ranges (another IPAM plugin, or ranges from runtimeConfig)', () => {
    expect(conf({ ipam: { type: 'dhcp' } }).ipam).toMatchObject({ type: 'dhcp', ranges: [], routes: [] });
  });

  it.each([
    [[], 'invalid ipam'],
    [{}, 'missing ipam.type'],
    [{ type: 7 }, 'invalid ipam.type'],
    [{ type: 'host-local', subnet: '10.0.0.0' }, 'invalid ipam.subnet'],
    [{ type: 'host-local', subnet: '10.0.0.0/33' }, 'invalid ipam.subnet'],
    [{ type: 'host-local', subnet: '10.0.0.0/24', rangeStart: '10.0.1.1' }, 'invalid ipam.rangeStart'],
    [{ type: 'host-local', subnet: '10.0.0.0/24', rangeEnd: 'fd00::1' }, 'invalid ipam.rangeEnd'],
    [{ type: 'host-local', subnet: '10.0.0.0/24', rangeStart: '10.0.0.9', rangeEnd: '10.0.0.8' }, 'invalid ipam.rangeEnd'],
    [{ type: 'host-local', subnet: '10.0.0.0/24', gateway: 'fd00::1' }, 'invalid ipam.gateway'],
    [{ type: 'host-local', rangeStart: '10.0.0.5' }, 'invalid ipam.rangeStart'],
    [{ type: 'host-local', gateway: '10.0.0.1' }, 'invalid ipam.gateway'],
    [{ type: 'host-local', ranges: {} }, 'invalid ipam.ranges'],
    [{ type: 'host-local', ranges: [{ subnet: '10.0.0.0/24' }] }, 'invalid ipam.ranges[0]'],
    [{ type: 'host-local', ranges: [[]] }, 'invalid ipam.ranges[0]'],
    [{ type: 'host-local', ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: 'fd00::/64' }]] }, 'invalid ipam.ranges[0]'],
    [{ type: 'host-local', ranges: [[{ subnet: '10.0.0.0/24' }], [{ rangeStart: '10.0.0.1' }]] }, 'invalid ipam.ranges[1][0].subnet'],
    [{ type: 'host-local', ranges: [[{ subnet: 'fd00::/64', rangeStart: 'fd01::1' }]] }, 'invalid ipam.ranges[0][0].rangeStart'],
    [{ type: 'host-local', routes: [{ dst: 'default' }] }, 'invalid ipam.routes[0].dst'],
    [{ type: 'host-local', routes: [{ dst: '0.0.0.0/0', gw: '10.0.0' }] }, 'invalid ipam.routes[0].gw'],
    [{ type: 'host-local', dataDir: 1 }, 'invalid ipam.dataDir'],
  ])('%j → code 7 "%s"', (ipam, msg) => {
    const err = cniError(() => conf({ ipam }));
    expect([err.code, err.msg]).toEqual([7, msg]);
  });
});

describe('runtimeConfig', () => {
  const lower = {
    portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp', hostIP: '' }],
    bandwidth: { ingressRate: 10000000, ingressBurst: 4294967295, egressRate: 0, egressBurst: 0 },
    dns: { servers: ['10.96.0.10'], searches: ['svc'], options: ['ndots:5'] },
    ipRanges: [[{ subnet: '10.30.0.0/24', rangeStart: '10.30.0.10' }]],
    ips: ['10.30.0.20/24'],
    mac: 'c2:00:00:00:00:99',
    cgroupPath: '/kubepods/pod1',
  };
  // What containerd's go-cni sends: Go field names, no JSON tags (CNI-CHECKLIST 76).
  const containerd = {
    PortMappings: [{ HostPort: 18080, ContainerPort: 80, Protocol: 'tcp', HostIP: '' }],
    Bandwidth: { IngressRate: 10000000, IngressBurst: 4294967295, EgressRate: 0, EgressBurst: 0 },
    DNS: { Servers: ['10.96.0.10'], Searches: ['svc'], Options: ['ndots:5'] },
    IPRanges: [[{ Subnet: '10.30.0.0/24', RangeStart: '10.30.0.10' }]],
    IPs: ['10.30.0.20/24'],
    MAC: 'c2:00:00:00:00:99',
    CgroupPath: '/kubepods/pod1',
  };
  const want = {
    portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp', hostIP: undefined }],
    bandwidth: { ingressRate: 10000000, ingressBurst: 4294967295, egressRate: 0, egressBurst: 0 },
    dns: { servers: ['10.96.0.10'], searches: ['svc'], options: ['ndots:5'] },
    ipRanges: [[{ subnet: '10.30.0.0/24', rangeStart: '10.30.0.10' }]],
    ips: ['10.30.0.20/24'],
    mac: 'c2:00:00:00:00:99',
    cgroupPath: '/kubepods/pod1',
  };

  it.each([
    ['lowerCamel (podman, libcni)', lower],
    ['Go field names (containerd)', containerd],
  ])('reads %s the same', (_name, runtimeConfig) => {
    const rc = conf({ runtimeConfig }).runtimeConfig;
    expect(rc).toMatchObject(want);
    expect(Object.keys(rc.raw).sort()).toEqual(Object.keys(lower).sort());
  });

  it('normalises keys at every level and keeps unknown keys as written', () => {
    expect(
      normaliseRuntimeConfig({
        PORTMAPPINGS: [{ hostport: 1, CONTAINERPORT: 2, Extra: 3 }, 'odd'],
        iprANGES: [[{ SUBNET: 'x' }], 'odd'],
        Aliases: { Net: ['a'] },
        'io.kubernetes.cri.pod-annotations': { A: 'b' },
      }),
    ).toEqual({
      portMappings: [{ hostPort: 1, containerPort: 2, Extra: 3 }, 'odd'],
      ipRanges: [[{ subnet: 'x' }], 'odd'],
      aliases: { Net: ['a'] },
      'io.kubernetes.cri.pod-annotations': { A: 'b' },
    });
  });

  it('defaults the protocol to tcp and lower-cases it', () => {
    const rc = conf({ runtimeConfig: { portMappings: [{ hostPort: 1, containerPort: 2 }, { hostPort: 3, containerPort: 4, protocol: 'UDP' }] } }).runtimeConfig;
    expect(rc.portMappings!.map((p) => p.protocol)).toEqual(['tcp', 'udp']);
  });

  it("is lenient with capabilities kelp does not use (podman's aliases map)", () => {
    const rc = conf({ runtimeConfig: { aliases: { podman: ['abc123'] }, infinibandGUID: 5, deviceID: [] } }).runtimeConfig;
    expect(rc.raw).toEqual({ aliases: { podman: ['abc123'] }, infinibandGUID: 5, deviceID: [] });
  });

  it.each([
    ['x', 'invalid runtimeConfig'],
    [{ portMappings: {} }, 'invalid runtimeConfig.portMappings'],
    [{ portMappings: [{ hostPort: 0, containerPort: 80 }] }, 'invalid runtimeConfig.portMappings[0].hostPort'],
    [{ portMappings: [{ containerPort: 80 }] }, 'invalid runtimeConfig.portMappings[0].hostPort'],
    [{ PortMappings: [{ HostPort: 80, ContainerPort: 65536 }] }, 'invalid runtimeConfig.portMappings[0].containerPort'],
    [{ portMappings: [{ hostPort: 80, containerPort: 80, protocol: 'icmp' }] }, 'invalid runtimeConfig.portMappings[0].protocol'],
    [{ portMappings: [{ hostPort: 80, containerPort: 80, hostIP: 'any' }] }, 'invalid runtimeConfig.portMappings[0].hostIP'],
    [{ bandwidth: { ingressRate: -1 } }, 'invalid runtimeConfig.bandwidth.ingressRate'],
    [{ Bandwidth: { EgressBurst: '1' } }, 'invalid runtimeConfig.bandwidth.egressBurst'],
    [{ ipRanges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.1.1' }]] }, 'invalid runtimeConfig.ipRanges[0][0].rangeEnd'],
    [{ ips: ['10.0.0.300'] }, 'invalid runtimeConfig.ips[0]'],
    [{ mac: 'c2:00:00:00:00' }, 'invalid runtimeConfig.mac'],
    [{ dns: { Servers: 'x' } }, 'invalid runtimeConfig.dns.servers'],
    [{ cgroupPath: 1 }, 'invalid runtimeConfig.cgroupPath'],
  ])('%j → code 7 "%s"', (runtimeConfig, msg) => {
    const err = cniError(() => conf({ runtimeConfig }));
    expect([err.code, err.msg]).toEqual([7, msg]);
  });
});

describe('prevResult', () => {
  it('is read in the config version', () => {
    const c = conf({ cniVersion: '0.4.0', prevResult: { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.0.0.2/24', interface: 0 }], interfaces: [{ name: 'eth0' }], dns: {} } });
    expect(c.prevResult).toEqual({ interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.2/24', interface: 0 }], routes: [], dns: {} });
  });

  it('a malformed prevResult is code 6 naming the field', () => {
    const err = cniError(() => conf({ prevResult: { ips: [{ address: 'x' }] } }));
    expect([err.code, err.msg]).toEqual([6, 'invalid prevResult.ips[0].address']);
  });
});

describe('GC attachments', () => {
  const list = [{ containerID: 'c1', ifname: 'eth0' }];
  it.each([
    ['cni.dev/valid-attachments', { 'cni.dev/valid-attachments': list }, list],
    ['cni.dev/attachments (libcni HEAD)', { 'cni.dev/attachments': list }, list],
    ['both (valid-attachments wins)', { 'cni.dev/valid-attachments': list, 'cni.dev/attachments': [] }, list],
    ['an empty list (delete everything)', { 'cni.dev/valid-attachments': [] }, []],
    ['none (delete nothing)', {}, undefined],
  ])('%s', (_name, extra, want) => {
    expect(conf({ cniVersion: '1.1.0', ...extra }).validAttachments).toEqual(want);
  });

  it.each([
    [{ 'cni.dev/valid-attachments': {} }, 'invalid cni.dev/valid-attachments'],
    [{ 'cni.dev/valid-attachments': [{ containerID: 'c1' }] }, 'invalid cni.dev/valid-attachments[0].ifname'],
    [{ 'cni.dev/attachments': [{ ifname: 'eth0' }] }, 'invalid cni.dev/attachments[0].containerID'],
  ])('%j → code 7 "%s"', (extra, msg) => {
    const err = cniError(() => conf({ cniVersion: '1.1.0', ...extra }));
    expect([err.code, err.msg]).toEqual([7, msg]);
  });
});

describe('args and capabilities never fail', () => {
  it.each([
    [{ cni: { ips: ['10.0.0.5'], labels: [{ key: 'app', value: 'web' }, { key: 1 }, 'x'] } }, ['10.0.0.5'], [{ key: 'app', value: 'web' }]],
    [{ cni: { ips: [1], labels: {} } }, undefined, undefined],
    [{ cni: 'x' }, undefined, undefined],
    ['x', undefined, undefined],
    [{ other: { ips: ['10.0.0.5'] } }, undefined, undefined],
  ])('args %j', (args, ips, labels) => {
    const c = conf({ args });
    expect(c.argsIps).toEqual(ips);
    expect(c.argsLabels).toEqual(labels);
  });

  it.each([
    [{ portMappings: true, bandwidth: false, odd: 'x' }, { portMappings: true, bandwidth: false }],
    ['x', {}],
    [undefined, {}],
  ])('capabilities %j', (capabilities, want) => {
    expect(conf({ capabilities }).capabilities).toEqual(want);
  });
});
