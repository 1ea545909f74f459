// The placement check's chart: one bar per single placement, its mean loss reduction over seeds, with an error bar
// (± one standard deviation) and a dot per seed when there are several; the dominant module's bar highlighted;
// vanilla LoRA as a dashed reference line across; the parameter count under each bar. SVG, sized to its box,
// coloured through CSS classes from the theme. Each bar is a button: click, Enter or Space opens its adapters, and
// the arrow keys, Home and End move between bars (one tab stop for the chart, as in the heatmap's grid).
import type { CheckPlacement, CheckResult } from '../src/protocol/messages';
import { compact, int, niceTicks } from './format';
import { svg as el } from './dom';
import { yGrid } from './chart';

export interface BarHandlers {
  open(id: string): void;
  focus?(id: string, anchor: Element): void;
  blur?(): void;
}

/** `layer 1 · down_proj` -> `L1 · down_proj`, so a label fits under a bar. */
function shortLabel(p: CheckPlacement): string {
  const m = /\((?:layer )?(\d+) · ([^)]+)\)$/.exec(p.label) ?? /^layer (\d+) · (.+)$/.exec(p.label);
  return m ? `L${m[1]} · ${m[2]}` : p.label;
}

/** The value range to draw: zero, every bar with its error bar and seeds, and vanilla's line. */
function valueRange(singles: CheckPlacement[], vanilla: CheckPlacement | undefined): [number, number] {
  let lo = 0, hi = 0;
  for (const p of singles) {
    const sd = p.reduction.sd ?? 0;
    lo = Math.min(lo, p.reduction.mean - sd, p.reduction.min);
    hi = Math.max(hi, p.reduction.mean + sd, p.reduction.max);
  }
  if (vanilla) { lo = Math.min(lo, vanilla.reduction.mean); hi = Math.max(hi, vanilla.reduction.mean); }
  if (hi === lo) hi = lo + 1;
  const pad = (hi - lo) * 0.08;
  return [lo < 0 ? lo - pad : 0, hi + pad];
}

export function renderBars(r: CheckResult, width: number, h: BarHandlers): SVGSVGElement {
  const singles = r.placements.filter((p) => p.kind !== 'vanilla');
  const vanilla = r.placements.find((p) => p.kind === 'vanilla');
  const height = 300;
  const m = { left: 52, right: vanilla ? 150 : 16, top: 26, bottom: 64 };
  const w = Math.max(120, width - m.left - m.right);
  const ih = height - m.top - m.bottom;
  const [y0, y1] = valueRange(singles, vanilla);
  const y = (v: number) => m.top + (1 - (v - y0) / (y1 - y0)) * ih;
  const band = w / Math.max(1, singles.length);
  const barW = Math.min(64, band * 0.56);
  const svg = el('svg', { class: 'bars', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', id: 'check-bars',
    'aria-label': `Loss reduction per placement: ${singles.length} single placements${vanilla ? ' and vanilla LoRA as a reference line' : ''}` });

  const axis = el('g', { class: 'axis' });
  yGrid(axis, niceTicks(y0, y1, 5), m.left, m.left + w, y);
  axis.append(el('line', { class: 'zero', x1: m.left, x2: m.left + w, y1: y(0), y2: y(0) }));
  axis.append(el('text', { class: 'axis-label', x: 4, y: m.top - 12 }, 'held-out loss reduction (before − after)'));
  svg.append(axis);

  if (vanilla) {
    const vy = y(vanilla.reduction.mean);
    const g = el('g', { class: 'vanilla', 'data-id': 'vanilla', role: 'button', tabindex: -1,
      'aria-label': `vanilla LoRA: loss reduction ${vanilla.reduction.mean.toFixed(3)}${vanilla.reduction.sd !== undefined ? ` ± ${vanilla.reduction.sd.toFixed(3)}` : ''}, ${int(vanilla.trainableParams)} parameters` });
    g.append(el('line', { class: 'vanilla-line', x1: m.left, x2: m.left + w + 8, y1: vy, y2: vy }));
    g.append(el('text', { class: 'vanilla-label', x: m.left + w + 12, y: vy - 3 }, `vanilla ${vanilla.reduction.mean.toFixed(3)}`));
    g.append(el('text', { class: 'vanilla-params', x: m.left + w + 12, y: vy + 11 }, `${compact(vanilla.trainableParams)} params`));
    svg.append(g);
  }

  for (const [i, p] of singles.entries()) {
    const cx = m.left + band * (i + 0.5);
    const mean = p.reduction.mean;
    const top = Math.min(y(mean), y(0));
    const isDom = p.kind === 'dominant';
    const sd = p.reduction.sd;
    const g = el('g', {
      class: `bar-group${isDom ? ' dom' : ''}`, role: 'button', tabindex: -1, 'data-id': p.id,
      'aria-label': `${p.label}: loss reduction ${mean.toFixed(3)}${sd !== undefined ? ` ± ${sd.toFixed(3)} over ${p.reduction.n} seeds` : ''}, ` +
        `${int(p.trainableParams)} parameters, PAGE share ${(100 * p.share).toFixed(1)}%, rank ${p.reductionRank} of ${singles.length}. Enter opens its adapter folder.`,
    });
    // A wide, invisible target: the whole column answers the pointer, not just the bar.
    g.append(el('rect', { class: 'hit', x: cx - band / 2, y: m.top, width: band, height: ih + m.bottom - 6 }));
    g.append(el('rect', { class: 'bar-rect', x: cx - barW / 2, y: top, width: barW, height: Math.max(1, Math.abs(y(mean) - y(0))), rx: 2 }));
    if (sd !== undefined) {
      const ya = y(mean + sd), yb = y(mean - sd);
      g.append(el('line', { class: 'err', x1: cx, x2: cx, y1: ya, y2: yb }));
      g.append(el('line', { class: 'err', x1: cx - 7, x2: cx + 7, y1: ya, y2: ya }));
      g.append(el('line', { class: 'err', x1: cx - 7, x2: cx + 7, y1: yb, y2: yb }));
      for (const [k, run] of p.runs.entries()) {
        g.append(el('circle', { class: 'seed-dot', cx: cx + barW / 2 + 6 + (k % 3) * 4, cy: y(run.reduction), r: 2.2 }));
      }
    }
    const labelY = (sd !== undefined ? y(mean + sd) : top) - 6;
    g.append(el('text', { class: 'value', x: cx, y: mean >= 0 ? labelY : y(0) - 6, 'text-anchor': 'middle' }, `${isDom ? '★ ' : ''}${mean.toFixed(3)}`));
    const base = m.top + ih;
    g.append(el('text', { class: 'name', x: cx, y: base + 16, 'text-anchor': 'middle' }, p.kind === 'module' ? 'module' : p.id));
    g.append(el('text', { class: 'where', x: cx, y: base + 30, 'text-anchor': 'middle' }, shortLabel(p)));
    g.append(el('text', { class: 'params', x: cx, y: base + 44, 'text-anchor': 'middle' }, `${int(p.trainableParams)} params`));
    svg.append(g);
  }

  // One tab stop: the dominant bar (else the first); the arrows move it.
  const groups = [...svg.querySelectorAll<SVGGElement>('.bar-group')];
  (groups.find((g) => g.classList.contains('dom')) ?? groups[0])?.setAttribute('tabindex', '0');
  const focusAt = (i: number) => {
    const next = groups[Math.max(0, Math.min(groups.length - 1, i))];
    if (!next) return;
    for (const g of groups) g.setAttribute('tabindex', g === next ? '0' : '-1');
    next.focus();
  };
  for (const [i, g] of groups.entries()) {
    const id = g.dataset.id!;
    g.addEventListener('click', () => h.open(id));
    g.addEventListener('keydown', (e: KeyboardEvent) => {
      switch (e.key) {
        case 'Enter': case ' ': e.preventDefault(); h.open(id); return;
        case 'ArrowRight': case 'ArrowDown': e.preventDefault(); focusAt(i + 1); return;
        case 'ArrowLeft': case 'ArrowUp': e.preventDefault(); focusAt(i - 1); return;
        case 'Home': e.preventDefault(); focusAt(0); return;
        case 'End': e.preventDefault(); focusAt(groups.length - 1); return;
      }
    });
    g.addEventListener('focus', () => h.focus?.(id, g));
    g.addEventListener('mouseenter', () => h.focus?.(id, g));
    g.addEventListener('blur', () => h.blur?.());
    g.addEventListener('mouseleave', () => h.blur?.());
  }
  const v = svg.querySelector<SVGGElement>('.vanilla');
  v?.addEventListener('click', () => h.open('vanilla'));
  v?.addEventListener('mouseenter', () => h.focus?.('vanilla', v));
  v?.addEventListener('mouseleave', () => h.blur?.());
  return svg;
}
