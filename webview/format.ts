// Number, name and axis formatting for the heatmap and the charts: pure functions, no DOM.

/**
 * The sub-module a projection belongs to (`self_attn`, `mlp`, GPT-2's `attn`): its parent in the Hugging Face name.
 * A module's layer and kind come from the report (see moduleLabel); the report has no group, and the parent needs
 * no family's naming pattern.
 */
export function moduleGroup(name: string): string | undefined {
  const parts = name.split('.');
  return parts.length >= 2 ? parts[parts.length - 2] : undefined;
}

/** Human names of the usual sub-module groups. */
export function groupLabel(group: string | undefined): string {
  if (!group) return '';
  if (/attn|attention/i.test(group)) return 'attention';
  if (/mlp|ffn|feed_forward/i.test(group)) return 'MLP';
  return group;
}

/** A share in [0, 1] as a percentage with sensible precision. */
export function percent(share: number, digits = 1): string {
  if (!Number.isFinite(share)) return '–';
  const p = share * 100;
  if (p > 0 && p < 0.1) return '<0.1%';
  return `${p.toFixed(p >= 10 || digits === 0 ? Math.min(digits, 1) : digits)}%`;
}

/** PAGE values span many decades: scientific notation with three significant digits. */
export function sci(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 0.01 && a < 1000) return x.toPrecision(3);
  return x.toExponential(2).replace('e+', 'e');
}

export function int(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? '–' : Math.round(n).toLocaleString('en-US');
}

/** 1234 -> 1.2k, 3_400_000 -> 3.4M. */
export function compact(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(a >= 1e10 ? 0 : 1)}B`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(n));
}

export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}:${String(s % 60).padStart(2, '0')}`;
  return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

export function basename(p: string): string {
  const parts = p.split(/[\\/]/);
  return parts[parts.length - 1] || p;
}

/**
 * Maps a share to a colour position t in [0, 1]. Linear: share / max. Log: log10 over three decades below the
 * maximum, so small but non-zero energy stays visible.
 */
export function colourPosition(share: number, max: number, scale: 'linear' | 'log'): number {
  if (!(max > 0) || !(share > 0)) return 0;
  if (scale === 'linear') return Math.min(1, share / max);
  const decades = 3;
  const t = (Math.log10(share / max) + decades) / decades;
  return Math.max(0, Math.min(1, t));
}

/** Tick values for the legend (shares), in ascending order. */
export function legendTicks(max: number, scale: 'linear' | 'log'): number[] {
  if (!(max > 0)) return [0];
  return scale === 'linear' ? [0, max / 2, max] : [max / 1000, max / 100, max / 10, max];
}

/**
 * Which rows of a dense grid get a label: the dominant layer always, the last one when it keeps clear of it, then
 * every `every`-th layer that keeps clear of the labels already placed, so no two labels touch.
 */
export function labelledRows(layers: number, every: number, dominant: number): Set<number> {
  const out = new Set<number>([dominant]);
  const clear = (l: number) => [...out].every((x) => Math.abs(x - l) >= every);
  if (clear(layers - 1)) out.add(layers - 1);
  for (let l = 0; l < layers; l += every) if (clear(l)) out.add(l);
  return out;
}

/** Round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 4): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}
