// CNI protocol: what the agent needs to read a kelp-cni request and write its answer.
export * from './errors';
export * from './version';
export * from './env';
export * from './result';
export * from './config';
export * from './request';
export * from './wire';
// The address forms CNI documents use, parsed by the one IP module of kelp.
export { ipFamily, parseIpOrCidr, tryParseCidr } from '../ipam/ip';
export type { Cidr, IpFamily } from '../ipam/ip';
