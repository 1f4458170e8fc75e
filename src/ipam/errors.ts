/**
 * - `invalid`: the configuration or the request is malformed (bad CIDR, IP outside every range).
 * - `conflict`: the requested address exists but cannot be given to this owner (taken, gateway,
 *   reserved, or the owner already holds another address in that range set).
 * - `exhausted`: no free address left in a range set; the CNI layer reports "no addresses available".
 */
export type IpamErrorKind = 'exhausted' | 'conflict' | 'invalid';

export class IpamError extends Error {
  override name = 'IpamError';
  constructor(readonly kind: IpamErrorKind, message: string) {
    super(message);
  }
}
