/** 6 bytes from `aa:bb:cc:dd:ee:ff`; rejects multicast addresses, which no interface may have. */
export function parseMac(s: string): Buffer {
  if (typeof s !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) {
    throw new TypeError(`invalid MAC address ${JSON.stringify(s)}`);
  }
  const b = Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
  if (b[0] & 1) throw new TypeError(`MAC address ${s} is multicast`);
  return b;
}

export function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
