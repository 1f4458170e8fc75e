import { describe, expect, it } from 'vitest';
import { ANNOTATION_LB_SOURCE_RANGES, isHeadless, ServiceObject, validateObject } from '../../src/sources/objects';

const meta = (name: string, extra: object = {}) => ({
  creationTimestamp: '2025-01-10T12:00:00Z',
  name,
  namespace: 'shop',
  resourceVersion: '48300',
  uid: '7e57c0de-0000-4000-8000-000000000001',
  managedFields: [{ apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': {} }, manager: 'kubectl-client-side-apply', operation: 'Update', time: '2025-01-10T12:00:00Z' }],
  ...extra,
});

// As `kubectl get service -o json` prints them.
const API_LB = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: meta('web', { labels: { app: 'web' }, annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}\n' } }),
  spec: {
    allocateLoadBalancerNodePorts: true,
    clusterIP: '10.96.120.7',
    clusterIPs: ['10.96.120.7', 'fd00:10:96::7a'],
    externalTrafficPolicy: 'Local',
    healthCheckNodePort: 31950,
    internalTrafficPolicy: 'Cluster',
    ipFamilies: ['IPv4', 'IPv6'],
    ipFamilyPolicy: 'PreferDualStack',
    loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8::/32'],
    ports: [
      { name: 'http', nodePort: 30080, port: 80, protocol: 'TCP', targetPort: 'http' },
      { appProtocol: 'kubernetes.io/h2c', name: 'metrics', nodePort: 30913, port: 9113, protocol: 'TCP', targetPort: 9113 },
      { name: 'dns', nodePort: 30053, port: 53, protocol: 'UDP', targetPort: 5353 },
    ],
    selector: { app: 'web' },
    sessionAffinity: 'ClientIP',
    sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
    trafficDistribution: 'PreferClose',
    type: 'LoadBalancer',
  },
  status: { loadBalancer: { ingress: [{ ip: '198.51.100.10', ipMode: 'VIP' }, { hostname: 'lb.example.com' }] } },
};

const API_CLUSTER_IP = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { ...meta('kubernetes'), namespace: 'default', labels: { component: 'apiserver', provider: 'kubernetes' } },
  spec: {
    clusterIP: '10.96.0.1',
    clusterIPs: ['10.96.0.1'],
    internalTrafficPolicy: 'Cluster',
    ipFamilies: ['IPv4'],
    ipFamilyPolicy: 'SingleStack',
    ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: 6443 }],
    sessionAffinity: 'None',
    type: 'ClusterIP',
  },
  status: { loadBalancer: {} },
};

const API_HEADLESS = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: meta('db', { labels: { app: 'db' } }),
  spec: {
    clusterIP: 'None',
    clusterIPs: ['None'],
    internalTrafficPolicy: 'Cluster',
    ipFamilies: ['IPv4'],
    ipFamilyPolicy: 'SingleStack',
    ports: [{ port: 5432, protocol: 'TCP', targetPort: 5432 }],
    publishNotReadyAddresses: true,
    selector: { app: 'db' },
    sessionAffinity: 'None',
    type: 'ClusterIP',
  },
  status: { loadBalancer: {} },
};

const API_EXTERNAL_NAME = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: meta('upstream'),
  spec: { externalName: 'api.example.com.', sessionAffinity: 'None', type: 'ExternalName' },
  status: { loadBalancer: {} },
};

const rejects = (base: object) => (_name: string, mutate: (o: any) => void, field: string) => {
  const o = structuredClone(base);
  mutate(o);
  expect(() => validateObject(o)).toThrow(expect.objectContaining({ field }));
};

const svc = (spec: object, extra: object = {}) => validateObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', ...extra }, spec }) as ServiceObject;

describe('Service', () => {
  it('accepts a dual-stack LoadBalancer as the API prints it and keeps what kelp uses', () => {
    const s = validateObject(API_LB) as ServiceObject;
    expect(s.metadata).toEqual({
      name: 'web',
      namespace: 'shop',
      uid: '7e57c0de-0000-4000-8000-000000000001',
      resourceVersion: '48300',
      labels: { app: 'web' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}\n' },
    });
    expect(s.spec).toEqual({
      type: 'LoadBalancer',
      clusterIP: '10.96.120.7',
      clusterIPs: ['10.96.120.7', 'fd00:10:96::7a'],
      ports: [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http', nodePort: 30080 },
        { name: 'metrics', protocol: 'TCP', port: 9113, targetPort: 9113, nodePort: 30913 },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30053 },
      ],
      selector: { app: 'web' },
      externalIPs: [],
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 31950,
      internalTrafficPolicy: 'Cluster',
      trafficDistribution: 'PreferClose',
      loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8::/32'],
      publishNotReadyAddresses: false,
    });
    expect(s.status).toEqual({ loadBalancer: { ingress: [{ ip: '198.51.100.10', ipMode: 'VIP' }, { hostname: 'lb.example.com' }] } });
  });

  it('accepts the kubernetes ClusterIP Service, a headless one and an ExternalName one', () => {
    const c = validateObject(API_CLUSTER_IP) as ServiceObject;
    expect(c.spec).toEqual({
      type: 'ClusterIP',
      clusterIP: '10.96.0.1',
      clusterIPs: ['10.96.0.1'],
      ports: [{ name: 'https', protocol: 'TCP', port: 443, targetPort: 6443 }],
      externalIPs: [],
      sessionAffinity: 'None',
      internalTrafficPolicy: 'Cluster',
      loadBalancerSourceRanges: [],
      publishNotReadyAddresses: false,
    });
    expect(c.status).toEqual({ loadBalancer: { ingress: [] } });
    const h = validateObject(API_HEADLESS) as ServiceObject;
    expect(isHeadless(h)).toBe(true);
    expect(isHeadless(c)).toBe(false);
    expect(h.spec).toMatchObject({ clusterIP: 'None', clusterIPs: ['None'], publishNotReadyAddresses: true, ports: [{ protocol: 'TCP', port: 5432, targetPort: 5432 }] });
    expect(h.spec.ports[0].name).toBeUndefined();
    const e = validateObject(API_EXTERNAL_NAME) as ServiceObject;
    expect(e.spec).toEqual({ type: 'ExternalName', clusterIPs: [], ports: [], externalName: 'api.example.com.', externalIPs: [], sessionAffinity: 'None', loadBalancerSourceRanges: [], publishNotReadyAddresses: false });
  });

  it('validates its own output to the same object (kelp apply stores this form)', () => {
    for (const doc of [API_LB, API_CLUSTER_IP, API_HEADLESS, API_EXTERNAL_NAME]) {
      const s = validateObject(doc);
      expect(validateObject(JSON.parse(JSON.stringify(s)))).toEqual(s);
    }
  });

  it('applies the API server defaults to a manifest', () => {
    const s = svc({ selector: { app: 'web' }, ports: [{ port: 80 }] });
    expect(s.metadata.namespace).toBe('default');
    expect(s.spec).toEqual({
      type: 'ClusterIP',
      clusterIPs: [],
      ports: [{ protocol: 'TCP', port: 80, targetPort: 80 }],
      selector: { app: 'web' },
      externalIPs: [],
      sessionAffinity: 'None',
      internalTrafficPolicy: 'Cluster',
      loadBalancerSourceRanges: [],
      publishNotReadyAddresses: false,
    });
    // targetPort 0 or "" is unset; clusterIP alone fills clusterIPs; addresses canonical.
    expect(svc({ clusterIP: 'fd00:0::1', ports: [{ port: 53, targetPort: 0, protocol: 'UDP' }] }).spec).toMatchObject({
      clusterIP: 'fd00::1',
      clusterIPs: ['fd00::1'],
      ports: [{ protocol: 'UDP', port: 53, targetPort: 53 }],
    });
    expect(svc({ ports: [{ port: 53, targetPort: '' }] }).spec.ports[0].targetPort).toBe(53);
    // ClientIP affinity gets the default timeout; NodePort and LoadBalancer get externalTrafficPolicy Cluster.
    expect(svc({ ports: [{ port: 80 }], sessionAffinity: 'ClientIP' }).spec.sessionAffinityConfig).toEqual({ clientIP: { timeoutSeconds: 10800 } });
    expect(svc({ type: 'NodePort', ports: [{ port: 80 }] }).spec.externalTrafficPolicy).toBe('Cluster');
    // External IPs make a ClusterIP Service reachable from outside.
    expect(svc({ ports: [{ port: 80 }], externalIPs: ['192.0.2.5'] }).spec).toMatchObject({ externalIPs: ['192.0.2.5'], externalTrafficPolicy: 'Cluster' });
    // An empty selector is no selector (the API server stores it so).
    expect(svc({ ports: [{ port: 80 }], selector: {} }).spec.selector).toBeUndefined();
    // A headless Service needs no ports.
    expect(svc({ clusterIP: 'None' }).spec.clusterIPs).toEqual(['None']);
  });

  it('reads load balancer source ranges from the annotation when the field is empty', () => {
    expect(svc({ type: 'LoadBalancer', ports: [{ port: 80 }] }, { annotations: { [ANNOTATION_LB_SOURCE_RANGES]: ' 10.0.0.0/8, 192.168.1.9/24 ' } }).spec.loadBalancerSourceRanges).toEqual(['10.0.0.0/8', '192.168.1.0/24']);
    expect(svc({ type: 'LoadBalancer', ports: [{ port: 80 }], loadBalancerSourceRanges: ['10.1.0.0/16'] }, { annotations: { [ANNOTATION_LB_SOURCE_RANGES]: '10.0.0.0/8' } }).spec.loadBalancerSourceRanges).toEqual(['10.1.0.0/16']);
    expect(svc({ type: 'LoadBalancer', ports: [{ port: 80 }] }, { annotations: { [ANNOTATION_LB_SOURCE_RANGES]: ' ' } }).spec.loadBalancerSourceRanges).toEqual([]);
  });

  const bad: Array<[string, (o: any) => void, string]> = [
    ['name not a DNS-1035 label', (o) => (o.metadata.name = '1web'), 'metadata.name'],
    ['name with a dot', (o) => (o.metadata.name = 'web.shop'), 'metadata.name'],
    ['type unknown', (o) => (o.spec.type = 'Ingress'), 'spec.type'],
    ['no ports', (o) => (o.spec.ports = []), 'spec.ports'],
    ['port name missing with several ports', (o) => delete o.spec.ports[1].name, 'spec.ports[1].name'],
    ['port name not a DNS label', (o) => (o.spec.ports[1].name = 'Metrics'), 'spec.ports[1].name'],
    ['port name duplicate', (o) => (o.spec.ports[2].name = 'http'), 'spec.ports[2].name'],
    ['port 0', (o) => (o.spec.ports[1].port = 0), 'spec.ports[1].port'],
    ['port 65536', (o) => (o.spec.ports[1].port = 65536), 'spec.ports[1].port'],
    ['port missing', (o) => delete o.spec.ports[0].port, 'spec.ports[0].port'],
    ['protocol unknown', (o) => (o.spec.ports[2].protocol = 'QUIC'), 'spec.ports[2].protocol'],
    ['targetPort out of range', (o) => (o.spec.ports[1].targetPort = 70000), 'spec.ports[1].targetPort'],
    ['targetPort name invalid', (o) => (o.spec.ports[1].targetPort = 'my_port'), 'spec.ports[1].targetPort'],
    ['targetPort digits as a string', (o) => (o.spec.ports[1].targetPort = '8080'), 'spec.ports[1].targetPort'],
    ['targetPort name too long', (o) => (o.spec.ports[1].targetPort = 'metrics-exporter'), 'spec.ports[1].targetPort'],
    ['targetPort a float', (o) => (o.spec.ports[1].targetPort = 80.5), 'spec.ports[1].targetPort'],
    ['duplicate port and protocol', (o) => (o.spec.ports[1].port = 80), 'spec.ports[1]'],
    ['duplicate nodePort', (o) => (o.spec.ports[1].nodePort = 30080), 'spec.ports[1].nodePort'],
    ['kubelet port on a LoadBalancer', (o) => (o.spec.ports[1].port = 10250), 'spec.ports[1]'],
    ['nodePort on ClusterIP', (o) => ((o.spec.type = 'ClusterIP'), delete o.spec.externalTrafficPolicy, delete o.spec.healthCheckNodePort, delete o.spec.loadBalancerSourceRanges), 'spec.ports[0].nodePort'],
    ['clusterIPs not matching clusterIP', (o) => (o.spec.clusterIPs[0] = '10.96.120.8'), 'spec.clusterIPs'],
    ['clusterIPs without clusterIP', (o) => delete o.spec.clusterIP, 'spec.clusterIPs'],
    ['clusterIP invalid', (o) => ((o.spec.clusterIP = '10.96.120.300'), (o.spec.clusterIPs[0] = '10.96.120.300')), 'spec.clusterIPs[0]'],
    ['clusterIPs second invalid', (o) => (o.spec.clusterIPs[1] = 'None'), 'spec.clusterIPs[1]'],
    ['clusterIPs two of a family', (o) => (o.spec.clusterIPs[1] = '10.96.120.8'), 'spec.clusterIPs'],
    ['clusterIPs three', (o) => o.spec.clusterIPs.push('10.96.0.9'), 'spec.clusterIPs'],
    ['clusterIPs against ipFamilies', (o) => (o.spec.ipFamilies = ['IPv6', 'IPv4']), 'spec.clusterIPs[0]'],
    ['ipFamilies unknown', (o) => (o.spec.ipFamilies[1] = 'IPv5'), 'spec.ipFamilies[1]'],
    ['ipFamilies duplicate', (o) => (o.spec.ipFamilies[1] = 'IPv4'), 'spec.ipFamilies[1]'],
    ['ipFamilyPolicy unknown', (o) => (o.spec.ipFamilyPolicy = 'DualStack'), 'spec.ipFamilyPolicy'],
    ['headless LoadBalancer', (o) => ((o.spec.clusterIP = 'None'), (o.spec.clusterIPs = ['None'])), 'spec.clusterIPs[0]'],
    ['None not alone', (o) => ((o.spec.clusterIP = 'None'), (o.spec.clusterIPs = ['None', 'fd00::1'])), 'spec.clusterIPs'],
    ['selector bad key', (o) => (o.spec.selector['app/x/y'] = 'a'), 'spec.selector["app/x/y"]'],
    ['selector bad value', (o) => (o.spec.selector.app = 'web!'), 'spec.selector["app"]'],
    ['sessionAffinity unknown', (o) => (o.spec.sessionAffinity = 'Cookie'), 'spec.sessionAffinity'],
    ['ClientIP timeout 0', (o) => (o.spec.sessionAffinityConfig.clientIP.timeoutSeconds = 0), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds'],
    ['ClientIP timeout over a day', (o) => (o.spec.sessionAffinityConfig.clientIP.timeoutSeconds = 86401), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds'],
    ['affinity config with None', (o) => (o.spec.sessionAffinity = 'None'), 'spec.sessionAffinityConfig'],
    ['externalIPs invalid', (o) => (o.spec.externalIPs = ['192.0.2.1', '192.0.2']), 'spec.externalIPs[1]'],
    ['externalIPs loopback', (o) => (o.spec.externalIPs = ['127.0.0.2']), 'spec.externalIPs[0]'],
    ['externalIPs unspecified', (o) => (o.spec.externalIPs = ['::']), 'spec.externalIPs[0]'],
    ['externalIPs link-local', (o) => (o.spec.externalIPs = ['169.254.1.1']), 'spec.externalIPs[0]'],
    ['externalIPs IPv6 link-local', (o) => (o.spec.externalIPs = ['fe80::1']), 'spec.externalIPs[0]'],
    ['externalIPs link-local multicast', (o) => (o.spec.externalIPs = ['224.0.0.251']), 'spec.externalIPs[0]'],
    ['externalIPs IPv6 link-local multicast', (o) => (o.spec.externalIPs = ['ff02::fb']), 'spec.externalIPs[0]'],
    ['externalTrafficPolicy unknown', (o) => (o.spec.externalTrafficPolicy = 'Node'), 'spec.externalTrafficPolicy'],
    ['healthCheckNodePort with Cluster', (o) => (o.spec.externalTrafficPolicy = 'Cluster'), 'spec.healthCheckNodePort'],
    ['internalTrafficPolicy unknown', (o) => (o.spec.internalTrafficPolicy = 'Node'), 'spec.internalTrafficPolicy'],
    ['trafficDistribution unknown', (o) => (o.spec.trafficDistribution = 'Nearest'), 'spec.trafficDistribution'],
    ['loadBalancerSourceRanges invalid', (o) => (o.spec.loadBalancerSourceRanges[1] = '2001:db8::'), 'spec.loadBalancerSourceRanges[1]'],
    ['publishNotReadyAddresses a string', (o) => (o.spec.publishNotReadyAddresses = 'yes'), 'spec.publishNotReadyAddresses'],
    ['ingress ip invalid', (o) => (o.status.loadBalancer.ingress[0].ip = 'lb'), 'status.loadBalancer.ingress[0].ip'],
    ['ingress hostname an IP', (o) => (o.status.loadBalancer.ingress[1].hostname = '198.51.100.11'), 'status.loadBalancer.ingress[1].hostname'],
    ['ingress hostname invalid', (o) => (o.status.loadBalancer.ingress[1].hostname = 'LB.example.com'), 'status.loadBalancer.ingress[1].hostname'],
    ['ingress ipMode unknown', (o) => (o.status.loadBalancer.ingress[0].ipMode = 'NAT'), 'status.loadBalancer.ingress[0].ipMode'],
    ['ingress ipMode without ip', (o) => (o.status.loadBalancer.ingress[1].ipMode = 'Proxy'), 'status.loadBalancer.ingress[1].ipMode'],
  ];
  it.each(bad)('rejects a LoadBalancer with %s at its path', rejects(API_LB));

  const badClusterIP: Array<[string, (o: any) => void, string]> = [
    ['externalTrafficPolicy without external access', (o) => (o.spec.externalTrafficPolicy = 'Local'), 'spec.externalTrafficPolicy'],
    ['loadBalancerSourceRanges', (o) => (o.spec.loadBalancerSourceRanges = ['10.0.0.0/8']), 'spec.loadBalancerSourceRanges'],
    ['the source ranges annotation', (o) => (o.metadata.annotations = { [ANNOTATION_LB_SOURCE_RANGES]: '10.0.0.0/8' }), `metadata.annotations["${ANNOTATION_LB_SOURCE_RANGES}"]`],
    ['one unnamed port of two', (o) => o.spec.ports.push({ port: 444, targetPort: 6444 }), 'spec.ports[1].name'],
  ];
  it.each(badClusterIP)('rejects a ClusterIP Service with %s at its path', rejects(API_CLUSTER_IP));

  const badExternalName: Array<[string, (o: any) => void, string]> = [
    ['no externalName', (o) => delete o.spec.externalName, 'spec.externalName'],
    ['externalName invalid', (o) => (o.spec.externalName = 'api_example.com'), 'spec.externalName'],
    ['a clusterIP', (o) => (o.spec.clusterIP = '10.96.0.5'), 'spec.clusterIPs'],
    ['ipFamilies', (o) => (o.spec.ipFamilies = ['IPv4']), 'spec.ipFamilies'],
    ['ipFamilyPolicy', (o) => (o.spec.ipFamilyPolicy = 'SingleStack'), 'spec.ipFamilyPolicy'],
  ];
  it.each(badExternalName)('rejects an ExternalName Service with %s at its path', rejects(API_EXTERNAL_NAME));

  it('rejects a bad annotation range at the annotation', () => {
    expect(() => svc({ type: 'LoadBalancer', ports: [{ port: 80 }] }, { annotations: { [ANNOTATION_LB_SOURCE_RANGES]: '10.0.0.0/8,nonsense' } })).toThrow(
      expect.objectContaining({ field: `metadata.annotations["${ANNOTATION_LB_SOURCE_RANGES}"]` }),
    );
  });
});
