// The datapath's public face, kept where the layers above (the agent, restore, tests, bench)
// import it from. The facade is in datapath.ts; each concern is in a file of its own.
export { Datapath } from './datapath';
export type { DatapathOptions } from './datapath';
export { objectPath } from './objects';
export { POD_FILTER } from './attach/pod';
export type { PinnedLink, RelinkOutcome } from './attach/pins';
export type { MasqueradeOptions } from './attach/uplink';
export type { MapStat } from './maps/view';
