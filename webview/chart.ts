// A small SVG loss chart: train loss as a line, eval loss as a dashed line with dots. Pixel-exact (redrawn on
// resize), coloured from the theme's chart colours through CSS classes.
import type { TrainCurvePoint } from '../src/protocol/messages';
import { niceTicks } from './format';
import { svg as el } from './dom';

export interface ChartOptions {
  width: number;
  height: number;
  totalSteps: number;
  /** Shared y range, so two runs side by side are comparable. */
  yRange?: [number, number];
  label: string;
}

export function lossRange(curves: TrainCurvePoint[][]): [number, number] | undefined {
  let lo = Infinity;
  let hi = -Infinity;
  for (const c of curves) {
    for (const p of c) {
      for (const v of [p.loss, p.evalLoss]) {
        if (v !== undefined && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
  }
  if (!Number.isFinite(lo)) return undefined;
  const pad = Math.max((hi - lo) * 0.08, 0.02);
  return [Math.max(0, lo - pad), hi + pad];
}

export function renderChart(curve: TrainCurvePoint[], opts: ChartOptions): SVGSVGElement {
  const { width, height } = opts;
  const m = { left: 42, right: 14, top: 12, bottom: 26 };
  const w = Math.max(60, width - m.left - m.right);
  const h = Math.max(40, height - m.top - m.bottom);
  const svg = el('svg', { class: 'loss-chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const train = curve.filter((p) => p.loss !== undefined && Number.isFinite(p.loss));
  const evals = curve.filter((p) => p.evalLoss !== undefined && Number.isFinite(p.evalLoss));
  svg.setAttribute('aria-label', `${opts.label}: ${train.length} train points, ${evals.length} eval points`);
  svg.dataset.trainPoints = String(train.length);
  svg.dataset.evalPoints = String(evals.length);
  const range = opts.yRange ?? lossRange([curve]) ?? [0, 1];
  const [y0, y1] = range[1] > range[0] ? range : [range[0] - 0.5, range[0] + 0.5];
  const xMax = Math.max(1, opts.totalSteps, ...curve.map((p) => p.step));
  const x = (s: number) => m.left + (s / xMax) * w;
  const y = (v: number) => m.top + (1 - (v - y0) / (y1 - y0)) * h;

  const axis = el('g', { class: 'axis' });
  yGrid(axis, niceTicks(y0, y1, 4), m.left, m.left + w, y);
  for (const t of niceTicks(0, xMax, Math.min(5, xMax))) {
    axis.append(el('text', { class: 'tick', x: x(t), y: m.top + h + 16, 'text-anchor': 'middle' }, String(Math.round(t))));
  }
  axis.append(el('line', { class: 'baseline', x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h }));
  axis.append(el('text', { class: 'axis-label', x: m.left + w, y: m.top + h - 5, 'text-anchor': 'end' }, 'step'));
  svg.append(axis);

  if (train.length) {
    const d = train.map((p, i) => `${i ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(p.loss!).toFixed(1)}`).join('');
    svg.append(el('path', { class: 'train-line', d }));
    const last = train[train.length - 1]!;
    svg.append(el('circle', { class: 'train-dot', cx: x(last.step), cy: y(last.loss!), r: 3 }));
  }
  if (evals.length) {
    const d = evals.map((p, i) => `${i ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(p.evalLoss!).toFixed(1)}`).join('');
    svg.append(el('path', { class: 'eval-line', d }));
    for (const p of evals) svg.append(el('circle', { class: 'eval-dot', cx: x(p.step), cy: y(p.evalLoss!), r: 3 }));
  }
  if (!train.length && !evals.length) {
    svg.append(el('text', { class: 'empty', x: m.left + w / 2, y: m.top + h / 2, 'text-anchor': 'middle' }, 'waiting for the first step…'));
  }
  // Legend, top right.
  const lg = el('g', { class: 'legend', transform: `translate(${m.left + w - 118}, ${m.top + 2})` });
  lg.append(el('line', { class: 'train-line', x1: 0, x2: 16, y1: 5, y2: 5 }));
  lg.append(el('text', { class: 'tick', x: 20, y: 8.5 }, 'train'));
  lg.append(el('line', { class: 'eval-line', x1: 60, x2: 76, y1: 5, y2: 5 }));
  lg.append(el('text', { class: 'tick', x: 80, y: 8.5 }, 'eval'));
  svg.append(lg);
  return svg;
}

/** Horizontal grid lines at the y ticks, from x1 to x2, labelled left of x1 with as many decimals as the tick step needs. */
export function yGrid(axis: SVGGElement, ticks: number[], x1: number, x2: number, y: (v: number) => number): void {
  const step = ticks.length > 1 ? ticks[1]! - ticks[0]! : 1;
  const decimals = Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));
  for (const t of ticks) {
    axis.append(el('line', { class: 'grid', x1, x2, y1: y(t), y2: y(t) }));
    axis.append(el('text', { class: 'tick', x: x1 - 6, y: y(t) + 3.5, 'text-anchor': 'end' }, t.toFixed(decimals)));
  }
}
