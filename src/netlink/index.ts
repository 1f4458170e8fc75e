// Interfaces, addresses, routes and sysctls, through rtnetlink (no `ip` commands).
export { NetlinkError, isGone } from './errors';
export { parseMac, formatMac } from './mac';
export {
  Rtnl,
  isValidIfname,
  type AddressEntry,
  type ExistPolicy,
  type LinkChanges,
  type LinkInfo,
  type LinkRef,
  type RtnlOptions,
  type RouteEntry,
  type RouteFilter,
  type RouteScope,
  type RouteSpec,
  type VethPairOptions,
  type VxlanOptions,
  type VxlanSettings,
} from './rtnl';
export {
  configurePodSide,
  podInterfaceCheck,
  podInterfaceSetup,
  podInterfaceTeardown,
  podRoutes,
  type CheckProblem,
  type CheckSubject,
  type PodInterface,
  type PodInterfaceConfig,
  type PodRoute,
} from './pod';
export { BatchedLinkDeleter } from './batch-delete';
export { confKey, disableIpv6, readSysctl, setIpv4Forwarding, sysctlPath, writeSysctl, writeSysctls, type SysctlValue } from './sysctl';
