// rtnl.createVxlan against the real kernel, in namespaces the test makes: the device kelp's
// VXLAN mode needs (external/collect_md, learning off, NOARP, up), made once and left alone by
// a restarted agent, and a clear error for a device of that name that is not what kelp would
// make. `ip -d -j` only observes.
import { afterAll, describe, expect, it } from 'vitest';
import { Rtnl } from '../../src/netlink';
import { cleanupAll, createNetns, Netns } from '../support/netns';

interface IpVxlan {
  ifindex: number;
  address: string;
  mtu: number;
  flags: string[];
  linkinfo?: { info_kind: string; info_data?: { external?: boolean; port?: number; learning?: boolean; local?: string } };
}

function show(ns: Netns, dev: string): IpVxlan {
  return (JSON.parse(ns.ip('-d', '-j', 'link', 'show', 'dev', dev)) as IpVxlan[])[0];
}

/** A namespace and a socket there; both go at cleanup. */
function node(): { ns: Netns; rtnl: Rtnl } {
  const ns = createNetns('kvx');
  return { ns, rtnl: Rtnl.inNetns(ns.path) };
}

afterAll(cleanupAll);

describe('createVxlan', () => {
  it('makes an external (collect_md) device: learning off, NOARP, up, the port and MTU asked for; returns its ifindex and MAC', async () => {
    const { ns, rtnl } = node();
    try {
      const link = await rtnl.createVxlan({ name: 'kelp_vxlan', port: 8472, mtu: 1450 });
      const seen = show(ns, 'kelp_vxlan');
      expect(seen.linkinfo?.info_kind).toBe('vxlan');
      expect(seen.linkinfo?.info_data).toMatchObject({ external: true, port: 8472, learning: false });
      expect(seen.linkinfo?.info_data?.local).toBeUndefined();
      expect(seen.flags).toEqual(expect.arrayContaining(['NOARP', 'UP']));
      expect(seen.mtu).toBe(1450);
      expect(link).toMatchObject({ index: seen.ifindex, name: 'kelp_vxlan', mac: seen.address, mtu: 1450, up: true, kind: 'vxlan' });
      expect(await rtnl.vxlanOf('kelp_vxlan')).toMatchObject({ vxlan: { collectMetadata: true, port: 8472, learning: false, noarp: true, mtu: 1450 } });
    } finally {
      rtnl.close();
    }
  });

  it('binds to `local` when given', async () => {
    const { ns, rtnl } = node();
    try {
      await rtnl.createVxlan({ name: 'kv0', port: 4789, mtu: 1400, local: '198.18.0.7' });
      expect(show(ns, 'kv0').linkinfo?.info_data).toMatchObject({ external: true, port: 4789, local: '198.18.0.7' });
    } finally {
      rtnl.close();
    }
  });

  it('the same settings again (an agent restart): the same device, untouched; down, it is brought up', async () => {
    const { ns, rtnl } = node();
    try {
      const first = await rtnl.createVxlan({ name: 'kelp_vxlan', port: 8472, mtu: 1450 });
      ns.ip('link', 'set', 'kelp_vxlan', 'down');
      const again = await rtnl.createVxlan({ name: 'kelp_vxlan', port: 8472, mtu: 1450 });
      expect(again).toMatchObject({ index: first.index, mac: first.mac, up: true });
      expect(show(ns, 'kelp_vxlan').flags).toContain('UP');
      expect(ns.ip('-o', 'link', 'show', 'type', 'vxlan').trim().split('\n')).toHaveLength(1);
    } finally {
      rtnl.close();
    }
  });

  it('other settings: an error naming each difference, and the device left as it was', async () => {
    const { ns, rtnl } = node();
    try {
      const first = await rtnl.createVxlan({ name: 'kelp_vxlan', port: 8472, mtu: 1450 });
      await expect(rtnl.createVxlan({ name: 'kelp_vxlan', port: 4789, mtu: 1400 })).rejects.toThrow(
        'createVxlan: kelp_vxlan exists with other settings: port 8472 (want 4789), mtu 1450 (want 1400); remove it or configure kelp to match',
      );
      await expect(rtnl.createVxlan({ name: 'kelp_vxlan', port: 8472, mtu: 1450, local: '198.18.0.7' })).rejects.toThrow(
        'local undefined (want 198.18.0.7)',
      );
      ns.ip('link', 'add', 'kv1', 'type', 'vxlan', 'external', 'dstport', '8473', 'learning');
      ns.ip('link', 'set', 'kv1', 'mtu', '1450');
      await expect(rtnl.createVxlan({ name: 'kv1', port: 8473, mtu: 1450 })).rejects.toThrow(/kv1 exists with other settings: learning true \(want false\), noarp false \(want true\)/);
      ns.ip('link', 'add', 'kv2', 'type', 'vxlan', 'id', '1', 'dstport', '8474', 'nolearning', 'remote', '198.18.0.9');
      await expect(rtnl.createVxlan({ name: 'kv2', port: 8474, mtu: 1500 })).rejects.toThrow(/collectMetadata false \(want true\)/);
      ns.ip('link', 'add', 'kd', 'type', 'veth', 'peer', 'name', 'kdp');
      await expect(rtnl.createVxlan({ name: 'kd', port: 8472, mtu: 1500 })).rejects.toThrow('createVxlan: kd exists and is not a VXLAN device (kind veth)');
      expect(show(ns, 'kelp_vxlan')).toMatchObject({ ifindex: first.index, mtu: 1450, linkinfo: { info_data: { port: 8472 } } });
    } finally {
      rtnl.close();
    }
  });

  it('bad options: an error naming the field, nothing made', async () => {
    const { ns, rtnl } = node();
    try {
      await expect(rtnl.createVxlan({ name: 'kelp/vxlan', port: 8472, mtu: 1450 })).rejects.toThrow('createVxlan: name "kelp/vxlan" is not a valid interface name');
      await expect(rtnl.createVxlan({ name: 'kv', port: 0, mtu: 1450 })).rejects.toThrow('createVxlan: port 0 is not in 1..65535');
      await expect(rtnl.createVxlan({ name: 'kv', port: 8472, mtu: 10 })).rejects.toThrow('createVxlan: mtu 10 is not in 68..65535');
      await expect(rtnl.createVxlan({ name: 'kv', port: 8472, mtu: 1450, local: 'fd00::1' })).rejects.toThrow('createVxlan: local "fd00::1" is not an IPv4 address');
      expect(ns.ip('-o', 'link', 'show', 'type', 'vxlan').trim()).toBe('');
    } finally {
      rtnl.close();
    }
  });
});
