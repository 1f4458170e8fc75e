import { defineConfig } from 'vitest/config';

// Test files share one machine's kernel: netns, bpffs mounts and CPU. Files run one at a
// time so timing-sensitive netns tests are not starved; cases inside a file may still be
// concurrent where the file says so.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
