// The training runs: a card per preset (DomLoRA, vanilla LoRA) with its live loss curve, its figures and its
// adapter, and the two side by side once both are trained.
import { moduleLabel } from '../src/protocol/messages';
import type { Preset, RunView } from '../src/protocol/webview';
import * as actions from './actions';
import { lossRange, renderChart } from './chart';
import { button, h, icon, type Child } from './dom';
import { basename, duration, int, percent } from './format';
import * as state from './state';

export const runsSection = h('section', { class: 'runs', 'aria-label': 'Training runs' });

const PRESET_TITLE: Record<Preset, string> = { domlora: 'DomLoRA', vanilla: 'Vanilla LoRA' };

let lastRunningKey = '';

export function renderRuns(): void {
  const s = state.panelState()!;
  const runs = s.runs;
  // A run that just started: bring the training section into view, so its live curve is seen.
  const running = (['domlora', 'vanilla'] as Preset[]).find((p) => runs[p]?.status === 'running');
  const runningKey = running ? `${running}|${runs[running]!.startedAt}` : '';
  const justStarted = runningKey !== '' && runningKey !== lastRunningKey;
  lastRunningKey = runningKey;
  const any = runs.domlora || runs.vanilla;
  if (!any) { runsSection.replaceChildren(); return; }
  const yRange = lossRange([runs.domlora?.curve ?? [], runs.vanilla?.curve ?? []]);
  const cards = (['domlora', 'vanilla'] as Preset[]).map((p) => runCard(p, runs[p], yRange));
  const children: Child[] = [h('h2', {}, icon('pulse'), ' Training'), h('div', { class: 'run-grid' }, ...cards)];
  const d = runs.domlora?.status === 'done' ? runs.domlora : undefined;
  const v = runs.vanilla?.status === 'done' ? runs.vanilla : undefined;
  if (d && v) children.push(comparison(d, v));
  runsSection.replaceChildren(...children.filter((c): c is Node | string => !!c));
  // Charts are drawn once the cards have a width.
  for (const p of ['domlora', 'vanilla'] as Preset[]) drawChart(p, yRange);
  if (justStarted) runsSection.querySelector(`[data-preset="${running}"]`)?.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
}

function runCard(preset: Preset, run: RunView | undefined, _yRange: [number, number] | undefined): HTMLElement {
  void _yRange;
  const title = h('div', { class: 'run-title' }, icon(preset === 'domlora' ? 'target' : 'layers'), h('span', {}, PRESET_TITLE[preset]));
  if (!run) {
    const b = button(`train-${preset}-empty`, `Train ${preset === 'domlora' ? 'DomLoRA' : 'vanilla LoRA'}`, 'play', { secondary: true, disabled: state.jobRunning() });
    b.addEventListener('click', () => actions.train(preset));
    return h('div', { class: 'card run-card empty', 'data-preset': preset }, h('div', { class: 'run-head' }, title),
      h('p', { class: 'muted' }, preset === 'vanilla'
        ? 'The baseline: LoRA of the same rank on every projection of every layer. Train it to compare loss and size.'
        : 'One adapter at the placed module; everything else frozen.'), b);
  }
  const targetText = preset === 'domlora' ? (run.targets[0] ? moduleLabel(run.targets[0], state.panelState()?.report) : '') : `all ${state.panelState()?.report?.modules.length ?? ''} modules`;
  let badge: HTMLElement;
  const last = [...run.curve].reverse().find((p) => p.loss !== undefined);
  const doneSteps = last?.step ?? 0;
  if (run.status === 'running') {
    badge = h('span', { class: 'badge running' }, icon('sync', 'codicon-modifier-spin'),
      `step ${doneSteps}/${run.steps}${run.etaSeconds !== undefined ? ` · ETA ${duration(run.etaSeconds)}` : ''}`);
  } else if (run.status === 'done') {
    badge = h('span', { class: 'badge done' }, icon('check'), ` done in ${duration(run.result?.seconds)}`);
  } else {
    badge = h('span', { class: `badge ${run.status}` }, icon(run.status === 'cancelled' ? 'circle-slash' : 'error'), ` ${run.status}`);
  }
  const head = h('div', { class: 'run-head' }, title, h('span', { class: 'run-target muted' }, targetText), badge);
  const chartBox = h('div', { class: 'chart', id: `chart-${preset}` });
  const res = run.result;
  const stats = h('dl', { class: 'stats' });
  const add = (k: string, v: Node | string, cls = '') => stats.append(h('div', { class: `stat ${cls}` }, h('dt', {}, k), h('dd', {}, v)));
  const params = res?.trainableParams ?? run.trainableParams;
  add('trainable params', params !== undefined ? int(params) : '–', 'params');
  if (res && preset === 'domlora') add('of vanilla', percent(res.ratioToVanilla, 2));
  const lossFirst = res?.trainLossFirst ?? run.curve.find((p) => p.loss !== undefined)?.loss;
  const lossLast = res?.trainLossLast ?? last?.loss;
  if (lossFirst !== undefined) add('train loss', `${lossFirst.toFixed(3)} → ${lossLast?.toFixed(3) ?? '…'}`);
  if (res?.evalLossBefore !== undefined || res?.evalLossAfter !== undefined) {
    add('eval loss', `${res.evalLossBefore?.toFixed(3) ?? '–'} → ${res.evalLossAfter?.toFixed(3) ?? '–'}`);
  }
  const children: Child[] = [head, chartBox, stats];
  if (run.status === 'running') {
    const c = button(`cancel-${preset}`, 'Cancel', 'debug-stop', { secondary: true });
    c.addEventListener('click', () => actions.cancel());
    children.push(h('div', { class: 'run-actions' }, c));
  }
  if (res?.adapterDir) {
    const link = h('a', { href: '#', class: 'adapter-link', title: res.adapterDir }, icon('folder'), ` ${basename(res.adapterDir)}`);
    link.addEventListener('click', (e) => { e.preventDefault(); actions.revealAdapter(preset); });
    children.push(h('div', { class: 'run-actions' }, link));
  }
  if (run.error && run.status === 'failed') children.push(h('p', { class: 'error-text' }, run.error));
  return h('div', { class: `card run-card ${run.status}`, 'data-preset': preset, 'data-status': run.status }, ...children);
}

function drawChart(preset: Preset, yRange: [number, number] | undefined): void {
  const run = state.panelState()?.runs[preset];
  const box = runsSection.querySelector<HTMLElement>(`#chart-${preset}`);
  if (!run || !box) return;
  const width = Math.max(220, Math.floor(box.clientWidth || 320));
  box.replaceChildren(renderChart(run.curve, { width, height: 150, totalSteps: run.steps, yRange, label: `${PRESET_TITLE[preset]} loss` }));
}

function comparison(d: RunView, v: RunView): HTMLElement {
  const dp = d.result!.trainableParams;
  const vp = v.result!.trainableParams;
  const bar = (label: string, n: number, cls: string) => {
    const fill = h('span', { class: `fill ${cls}` });
    fill.style.width = `${Math.max(0.4, (n / Math.max(dp, vp)) * 100).toFixed(2)}%`;
    return h('div', { class: 'cmp-row' }, h('span', { class: 'cmp-label' }, label), h('span', { class: 'cmp-bar' }, fill), h('span', { class: 'cmp-num' }, int(n)));
  };
  const dl = d.result!.evalLossAfter ?? d.result!.trainLossLast;
  const vl = v.result!.evalLossAfter ?? v.result!.trainLossLast;
  const which = d.result!.evalLossAfter !== undefined ? 'eval' : 'train';
  return h('div', { class: 'card compare', id: 'compare' },
    h('div', { class: 'card-label' }, icon('arrow-swap'), 'DomLoRA vs vanilla LoRA'),
    bar('DomLoRA', dp, 'dom'), bar('vanilla', vp, 'van'),
    h('p', {}, h('strong', {}, `${percent(dp / vp, 2)}`), ' of the trainable parameters',
      dl !== undefined && vl !== undefined ? `; ${which} loss ${dl.toFixed(3)} vs ${vl.toFixed(3)} (${dl - vl >= 0 ? '+' : ''}${(dl - vl).toFixed(3)}).` : '.'));
}
