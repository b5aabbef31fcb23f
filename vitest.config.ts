import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Tests build real filesystems on sparse files and call mkfs/fsck: two cores, keep it modest.
    pool: 'forks',
    maxWorkers: 2,
  },
});
