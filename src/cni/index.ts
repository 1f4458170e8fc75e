// CNI protocol: what the agent needs to read a kelp-cni request and write its answer.
export * from './errors';
export * from './version';
export * from './env';
export * from './result';
export * from './config';
export * from './request';
export * from './wire';
export { parseCidr, parseIpOrCidr, ipFamily, cidrContains } from './ip';
export type { Cidr, Family } from './ip';
