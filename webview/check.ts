// The placement check in the panel: while it runs, which placement and seed it trains and how far the whole check
// is; once done, the bar chart of loss reduction per placement (bars.ts), the correlation and the findings; after a
// cancel, what was kept and a way to resume. Every action goes through actions.ts.
import type { CheckPlacement, CheckResult } from '../src/protocol/messages';
import type { CheckView } from '../src/protocol/webview';
import * as actions from './actions';
import { renderBars } from './bars';
import { button, h, icon } from './dom';
import { duration, int, percent } from './format';
import { tip } from './heatmap';
import * as state from './state';

export const checkSection = h('section', { class: 'check-section', 'aria-label': 'Placement check' });

let lastKey = '';

export function renderCheck(): void {
  const view = state.panelState()?.check;
  if (!view) { checkSection.replaceChildren(); lastKey = ''; return; }
  const title = h('h2', {}, icon('beaker'), ' Placement check');
  let body: HTMLElement;
  if (view.status === 'running') body = running(view);
  else if (view.status === 'done' && view.result) body = done(view.result);
  else body = stopped(view);
  checkSection.replaceChildren(title, body);
  if (view.status === 'done' && view.result) drawBars(view.result);
  // A check that just started or finished: bring it into view (not one shown again when the panel opens).
  const key = `${view.dir}|${view.status}`;
  if (key !== lastKey && (lastKey !== '' || view.status === 'running')) checkSection.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  lastKey = key;
}

function running(view: CheckView): HTMLElement {
  const p = view.progress;
  const pl = p?.placement;
  const runs = pl ? pl.count * pl.seeds : undefined;
  const before = pl ? (pl.index - 1) * pl.seeds + (pl.seedIndex - 1) : 0;
  const frac = pl && runs ? (before + (p?.phase === 'train' && p.total > 0 ? p.done / p.total : 0)) / runs : undefined;
  const text = !pl ? 'Starting the check…'
    : `Training placement ${pl.index} of ${pl.count}: ${pl.label}${pl.seeds > 1 ? ` · seed ${pl.seed} (${pl.seedIndex} of ${pl.seeds})` : ''}` +
      `${p?.phase === 'train' && p.total > 0 ? ` · step ${p.done}/${p.total}` : p ? ` · ${p.phase}` : ''}`;
  const bar = h('div', { class: 'bar' }, h('div', { class: frac === undefined ? 'fill indeterminate' : 'fill' }));
  if (frac !== undefined) (bar.firstChild as HTMLElement).style.width = `${(frac * 100).toFixed(1)}%`;
  const cancel = button('cancel-check', 'Cancel', 'debug-stop', { secondary: true });
  cancel.addEventListener('click', () => actions.cancel());
  return h('div', { class: 'card check-card running', id: 'check', 'data-status': 'running', role: 'status' },
    h('div', { class: 'banner-body' }, h('div', { class: 'banner-text', id: 'check-progress' }, text), bar),
    h('p', { class: 'muted' }, `Each placement trains one adapter with the same budget and is evaluated on the same held-out records` +
      `${view.seeds > 1 ? `, ${view.seeds} times (seeds)` : ''}. Finished runs are kept if you cancel; the check can be resumed.`),
    cancel);
}

function stopped(view: CheckView): HTMLElement {
  const canResume = view.finishedRuns !== undefined && view.totalRuns !== undefined && view.finishedRuns < view.totalRuns;
  const children: (Node | string)[] = [
    h('div', { class: 'run-head' }, h('span', { class: `badge ${view.status}` }, icon(view.status === 'cancelled' ? 'circle-slash' : 'error'), ` ${view.status}`),
      view.totalRuns !== undefined ? h('span', { class: 'muted' }, `${view.finishedRuns} of ${view.totalRuns} runs finished and kept`) : ''),
  ];
  if (view.error && view.status === 'failed') children.push(h('p', { class: 'error-text' }, view.error));
  if (canResume) {
    const b = button('resume-check', 'Resume check', 'debug-continue', { disabled: state.jobRunning() });
    b.addEventListener('click', () => actions.checkPlacement(true));
    children.push(b);
  }
  return h('div', { class: 'card check-card', id: 'check', 'data-status': view.status }, ...children);
}

function done(r: CheckResult): HTMLElement {
  const seeds = r.config.seeds.length;
  const c = r.correlation;
  const head = h('div', { class: 'check-head' },
    h('div', { class: 'check-meta muted' },
      `${r.config.steps} steps × ${r.config.batchSize * r.config.gradAccum} records · lr ${r.config.lr} · rank ${r.config.rank} · ` +
      `${seeds} seed${seeds === 1 ? '' : 's'} · ${r.trainRecords} train / ${r.evalRecords} held-out records · ${duration(r.seconds)} on ${r.backend}`),
    h('div', { class: 'check-stats' },
      h('span', { class: 'chip', id: 'check-spearman', title: 'Spearman\'s rank correlation of PAGE share and loss reduction over the single placements' },
        icon('graph-line'), h('span', {}, `Spearman ρ ${c.spearman === null ? 'undefined' : c.spearman.toFixed(2)} · ${c.singles} placements`)),
      c.dominantRank !== undefined
        ? h('span', { class: `chip ${c.dominantRank === 1 ? 'good' : ''}`, id: 'check-rank' }, icon('star-full', 'star'), h('span', {}, `dominant ranks ${c.dominantRank} of ${c.singles}`))
        : ''));
  const chart = h('div', { class: 'check-chart', id: 'check-chart' });
  const key = h('div', { class: 'key check-key' },
    h('span', {}, h('span', { class: 'sw-bar dom' }), ' dominant'), h('span', {}, h('span', { class: 'sw-bar' }), ' other single placements'),
    r.placements.some((p) => p.kind === 'vanilla') ? h('span', {}, h('span', { class: 'sw-line' }), ' vanilla LoRA (all modules)') : '',
    seeds > 1 ? h('span', {}, 'error bars: ± 1 sd over seeds; dots: each seed') : h('span', {}, 'one seed: no error bars'));
  const list = h('ul', { class: 'findings', id: 'check-findings' }, ...r.findings.map((f) => h('li', {}, f)));
  const note = h('p', { class: 'caption muted' }, `Click a bar (or focus it and press Enter) to open that placement's adapter folder (PEFT format). ` +
    `Shares from ${r.report.probed ? 'the check\'s own probe' : 'the report shown'} of ${r.report.dataset.split(/[\\/]/).pop()}.`);
  return h('div', { class: 'card check-card', id: 'check', 'data-status': 'done' }, head, chart, key, list, note);
}

function drawBars(r: CheckResult): void {
  const box = checkSection.querySelector<HTMLElement>('#check-chart');
  if (!box) return;
  const width = Math.max(360, Math.floor(box.clientWidth || 720));
  box.replaceChildren(renderBars(r, width, {
    open: (id) => actions.revealPlacement(id),
    focus: (id, anchor) => showTip(r, id, anchor),
    blur: () => { tip.hidden = true; },
  }));
}

/** Redraws the chart at the panel's new width. */
export function resizeCheck(): void {
  const r = state.panelState()?.check?.result;
  if (r && state.panelState()?.check?.status === 'done') drawBars(r);
}

function showTip(r: CheckResult, id: string, anchor: Element): void {
  const p: CheckPlacement | undefined = r.placements.find((x) => x.id === id);
  if (!p) return;
  const vanilla = r.placements.find((x) => x.kind === 'vanilla');
  const rows: [string, string][] = [
    ['loss reduction', `${p.reduction.mean.toFixed(4)}${p.reduction.sd !== undefined ? ` ± ${p.reduction.sd.toFixed(4)}` : ''}`],
    ['held-out loss', `${p.evalLossBefore.toFixed(4)} → ${p.evalLossAfter.mean.toFixed(4)}`],
    ...p.runs.map((run): [string, string] => [`seed ${run.seed}`, `${run.reduction.toFixed(4)} (${run.seconds.toFixed(1)} s)`]),
    ['trainable params', `${int(p.trainableParams)}${vanilla && p !== vanilla ? ` (${percent(p.trainableParams / vanilla.trainableParams, 2)} of vanilla)` : ''}`],
    ['PAGE share', `${percent(p.share, 2)}${p.pageRank !== undefined ? ` · rank ${p.pageRank}` : ''}`],
  ];
  tip.replaceChildren(
    h('div', { class: 'tip-title' }, p.label, p.kind === 'dominant' ? h('span', { class: 'tip-badge dom' }, icon('star-full'), ' dominant') : undefined),
    h('code', { class: 'tip-name' }, p.modules.length === 1 ? p.modules[0]! : `${p.modules.length} modules`),
    h('table', {}, ...rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v)))),
    h('div', { class: 'tip-hint' }, 'Click (or Enter) to open its adapter folder.'));
  tip.hidden = false;
  const a = anchor.getBoundingClientRect();
  const t = tip.getBoundingClientRect();
  let x = a.right + 8;
  if (x + t.width > window.innerWidth - 8) x = Math.max(8, a.left - t.width - 8);
  const yPos = Math.max(8, Math.min(window.innerHeight - t.height - 8, a.top + 20));
  tip.style.left = `${x + window.scrollX}px`;
  tip.style.top = `${yPos + window.scrollY}px`;
}
