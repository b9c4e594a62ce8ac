import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One file at a time: the suites spawn real processes and Nebula nodes, so on a small machine parallel files only
    // compete for the CPU (and time each other out) without finishing sooner.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 180_000,
  },
})
