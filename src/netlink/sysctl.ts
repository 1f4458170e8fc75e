// Network sysctls of a namespace. /proc/sys/net resolves to the namespace of the process (here:
// the thread) that opens the file, so the file is opened and written inside inNetns.
import { readFileSync, writeFileSync } from 'node:fs';
import { asNetlinkError } from './errors';
import { inNetns } from '../bpf';

export type SysctlValue = string | number;

/**
 * The /proc/sys path of a key in sysctl(8) notation: '.' separates levels and '/' stands for a
 * '.' inside a level (the VLAN interface eth0.100 is `net.ipv4.conf.eth0/100.rp_filter`).
 */
export function sysctlPath(key: string): string {
  if (!/^net\.[^\s]+$/.test(key) || key.split('.').some((p) => p === '' || p === '..')) {
    throw new TypeError(`invalid network sysctl key ${JSON.stringify(key)}`);
  }
  return '/proc/sys/' + key.split('.').map((p) => p.replace(/\//g, '.')).join('/');
}

/** The key of a per-interface setting: confKey('ipv4', 'eth0', 'rp_filter'). */
export function confKey(family: 'ipv4' | 'ipv6', ifname: string, name: string): string {
  return `net.${family}.conf.${ifname.replace(/\./g, '/')}.${name}`;
}

function inNs<T>(netns: string | undefined, fn: () => T): T {
  return netns === undefined ? fn() : inNetns(netns, fn);
}

/** Writes several sysctls with one namespace switch, in order; stops at the first failure. */
export function writeSysctls(values: Record<string, SysctlValue>, netns?: string): void {
  const entries = Object.entries(values).map(([k, v]) => [k, sysctlPath(k), String(v)] as const);
  let current = '';
  try {
    inNs(netns, () => {
      for (const [key, file, value] of entries) {
        current = `${key}=${value}`;
        writeFileSync(file, value);
      }
    });
  } catch (e) {
    throw asNetlinkError(e, current ? `sysctl ${current}${netns ? ` in ${netns}` : ''}` : `sysctl in netns ${netns}`);
  }
}

export function writeSysctl(key: string, value: SysctlValue, netns?: string): void {
  writeSysctls({ [key]: value }, netns);
}

export function readSysctl(key: string, netns?: string): string {
  const file = sysctlPath(key);
  try {
    return inNs(netns, () => readFileSync(file, 'utf8')).trim();
  } catch (e) {
    throw asNetlinkError(e, `sysctl read ${key}${netns ? ` in ${netns}` : ''}`);
  }
}

export function setIpv4Forwarding(on: boolean, netns?: string): void {
  writeSysctl('net.ipv4.ip_forward', on ? 1 : 0, netns);
}

/**
 * Turns IPv6 off on one interface (no link-local address, no DAD/RS/MLD packets). Returns false
 * when the kernel has no IPv6 for it (module absent or the interface gone).
 */
export function disableIpv6(ifname: string, netns?: string): boolean {
  try {
    writeSysctl(confKey('ipv6', ifname, 'disable_ipv6'), 1, netns);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return false;
    throw e;
  }
}
