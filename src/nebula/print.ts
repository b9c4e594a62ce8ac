/** How `nebula-cert print` writes a certificate's times. */

/** Unix seconds as nebula-cert prints them with `TZ=UTC`: RFC 3339, whole seconds, e.g. `2026-11-21T05:06:01Z`. */
export function printTime(seconds: number): string {
  const date = new Date(seconds * 1000)
  return Number.isNaN(date.getTime()) ? String(seconds) : date.toISOString().replace(/\.000Z$/, 'Z')
}
