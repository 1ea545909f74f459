// How sizes and parameter counts read, the same in the CLI, the Models view and the quick pick. Pure functions: no
// imports, so every side shares them.

/** 1.1 MB, 24.5 GB: decimal units, as huggingface-cli scan-cache and the Hub's pages size models. */
export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${v} B` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** 260K, 135M, 12.2B; `-` when unknown. */
export function formatParams(n: number | undefined): string {
  if (n === undefined) return '-';
  const [d, s] = n >= 1e9 ? [1e9, 'B'] : n >= 1e6 ? [1e6, 'M'] : n >= 1e3 ? [1e3, 'K'] : [1, ''];
  const v = n / d;
  return `${v >= 100 || d === 1 ? v.toFixed(0) : v.toFixed(1)}${s}`;
}

/** True when files are far smaller on disk than their length (sparse, or allocated lazily): worth saying. */
export function looksSparse(m: { bytes: number; diskBytes: number }): boolean {
  return m.bytes > m.diskBytes * 1.1 + 65536;
}
