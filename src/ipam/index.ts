export * from './ip';
export * from './errors';
export * from './config';
export * from './store';
export * from './file-store';
export * from './allocator';
export * from './request';
