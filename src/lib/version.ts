/** Comparing release versions (`x.y.z`, as `nebula -version` and `docker compose version` print them). */

/** Negative, zero or positive as version `a` is older than, the same as or newer than `b` (numeric `x.y.z`, a leading `v` ignored). */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string): number[] => v.replace(/^v/, '').split(/[.+-]/).slice(0, 3).map((n) => Number.parseInt(n, 10) || 0)
  const [x, y] = [parts(a), parts(b)]
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}
