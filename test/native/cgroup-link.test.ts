// Cgroup links as socket LB uses them (attach/cgroup.ts): a link on a cgroup this test makes
// reports that cgroup's id and its attach type, outlives its handle once pinned, and moves onto
// another program instance in place.
import { mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attachCgroup, AttachType, loadObject, openPinnedLink } from '../../src/bpf';
import { cgroupId } from '../../src/datapath/attach/cgroup';
import { sockConstants } from '../../src/datapath/sock';
import { cleanupAll, mountBpffs, onCleanup, sh, uniqueName } from '../support/netns';

afterAll(cleanupAll);

const SOCK = path.join(__dirname, '../../build/bpf/sock.o');

describe('cgroup links', () => {
  it('report their cgroup and attach type, survive their handle when pinned, and update in place', () => {
    const cg = path.join('/sys/fs/cgroup/unified', uniqueName('kelpcl'));
    mkdirSync(cg);
    onCleanup(() => rmdirSync(cg));
    const pinRoot = mountBpffs();
    const a = loadObject(SOCK, { pinRoot, constants: sockConstants('all') });
    const b = loadObject(SOCK, { pinRoot, constants: sockConstants('all') });
    onCleanup(() => {
      a.close();
      b.close();
    });
    const pin = path.join(pinRoot, 'connect4');
    const link = attachCgroup(a.program('kelp_sock_connect4'), cg, AttachType.CGROUP_INET4_CONNECT);
    link.pin(pin);
    link.close();
    const again = openPinnedLink(pin);
    try {
      const info = again.info();
      expect(again.kind).toBe('cgroup');
      expect(info.cgroupId).toBe(cgroupId(cg));
      expect(info.attachType).toBe(AttachType.CGROUP_INET4_CONNECT);
      expect(info.progId).toBe(a.program('kelp_sock_connect4').id);
      again.update(b.program('kelp_sock_connect4'));
      expect(again.info()).toMatchObject({ id: info.id, progId: b.program('kelp_sock_connect4').id });
      expect(sh('bpftool', ['cgroup', 'show', cg])).toContain('kelp_sock_conne');
      again.detach();
      again.unpin();
    } finally {
      again.close();
    }
    expect(sh('bpftool', ['cgroup', 'show', cg])).not.toContain('kelp_sock');
  });
});
