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

/** Edit distance (insertions, deletions, substitutions), for "did you mean" suggestions. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * The candidates closest to a mistyped word, nearest first, at most `n`: those within a third of the word's length
 * in edits (a typo, a missing letter), plus any whose dash-separated words' initials spell it (`learning-rate` for
 * `lr`, or the other way round), so a user who typed the long name of a short flag is pointed to it.
 */
export function nearest(word: string, candidates: readonly string[], n = 3): string[] {
  const initials = (s: string) => s.split(/[-_]/).map((w) => w[0] ?? '').join('');
  const scored = candidates.map((c) => {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    const close = d <= Math.max(2, Math.floor(word.length / 3)) || (word.includes('-') && initials(word) === c) || (c.includes('-') && initials(c) === word);
    return { c, d, close };
  });
  return scored.filter((s) => s.close).sort((x, y) => x.d - y.d).slice(0, n).map((s) => s.c);
}
