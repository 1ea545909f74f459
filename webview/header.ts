// The top of the panel: the title with the model and the actions, the probe's progress banner, and the cards of the
// dominant module and of the adapter's placement.
import { backendLabel, moduleLabel } from '../src/protocol/messages';
import * as actions from './actions';
import { button, h, icon } from './dom';
import { basename, compact, duration, int, percent } from './format';
import { gridOf } from './grid';
import * as state from './state';

export const headerSection = h('header', { class: 'hdr' });
export const bannerSection = h('div', { class: 'banner-slot' });
export const summarySection = h('section', { class: 'summary' });

function stabilityClass(s: number): { cls: string; word: string } {
  if (s >= 0.9) return { cls: 'good', word: 'stable' };
  if (s >= 0.6) return { cls: 'fair', word: 'fairly stable' };
  return { cls: 'poor', word: 'uncertain' };
}

export function renderHeader(): void {
  const s = state.panelState()!;
  const r = s.report;
  const busy = state.jobRunning();
  const hasRun = Object.values(s.runs).some((run) => run?.status === 'done');
  const buttons = h('div', { class: 'actions' },
    button('train-domlora', 'Train DomLoRA', 'play', {
      disabled: busy || !s.placement, title: s.placement ? `Train one LoRA adapter at ${moduleLabel(s.placement, r)}` : 'Run the probe first',
    }),
    button('train-vanilla', 'Train vanilla LoRA', 'layers', { secondary: true, disabled: busy, title: 'The baseline: LoRA on every projection of every layer' }),
    button('export', 'Export…', 'export', { secondary: true, disabled: busy || !hasRun, title: hasRun ? 'Export the trained adapter' : 'Train an adapter first' }),
    button('check-placement', 'Check placement', 'beaker', { secondary: true, disabled: busy || !r,
      title: r ? 'Train the dominant module, the runner-up, the lowest, random modules of its kind and vanilla LoRA with the same budget, and compare their held-out losses' : 'Run the probe first' }),
    button('compare-datasets', 'Compare datasets', 'git-compare', { secondary: true, disabled: !r,
      title: 'Compare this model\'s reports on different data: the dominant of each and how alike their orderings are' }),
    h('vscode-icon', { id: 'rerun', name: 'refresh', 'action-icon': true, label: 'Run the probe again', title: 'Run the probe again' }),
  );
  const title = h('div', { class: 'title' },
    h('h1', {}, icon('flame', 'title-icon'), h('span', { class: 'model-name' }, s.modelName)),
    h('div', { class: 'subtitle' }, 'PAGE · where a LoRA adapter learns most, per module'));
  const chips: HTMLElement[] = [];
  if (r) {
    const m = r.model;
    chips.push(chip('symbol-class', `${m.modelType} · ${m.layers} layers · ${compact(m.parameters)} params`, `hidden ${m.hiddenSize}, intermediate ${m.intermediateSize}, ${m.heads} heads (${m.kvHeads} kv)`));
    chips.push(chip('database', `${basename(r.config.dataset)} · ${r.config.datasetFormat}`, r.config.dataset));
    chips.push(chip('list-ordered', `${r.config.samples} samples · ${compact(r.tokens)} tokens`, `${r.config.samples} of ${r.config.requestedSamples} requested (${r.config.sampling})${r.config.skipped ? `, ${r.config.skipped} skipped` : ''}; mean loss ${r.meanLoss.toFixed(3)}`));
    chips.push(chip('settings', `r ${r.config.rank} · α ${r.config.alpha} · seq ${r.config.seqLen}`, `seed ${r.config.seed}`));
    const backend = backendLabel({ backend: r.config.backend, device: r.config.backendDevice });
    chips.push(chip('circuit-board', `${backend} · ${duration(r.timings.probeSeconds + r.timings.loadSeconds)}`, `probed on ${backend}: load ${r.timings.loadSeconds.toFixed(1)} s, probe ${r.timings.probeSeconds.toFixed(1)} s; ${new Date(r.createdAt).toLocaleString()}`, 'backend-chip'));
  } else if (s.backend) {
    chips.push(chip('circuit-board', backendLabel(s.backend), s.backend.detail ?? 'backend', 'backend-chip'));
  }
  const meta = h('div', { class: 'meta' }, ...chips);
  headerSection.replaceChildren(h('div', { class: 'titlebar' }, title, buttons), meta);
  headerSection.querySelector('#train-domlora')?.addEventListener('click', () => { if (!state.jobRunning()) actions.train('domlora'); });
  headerSection.querySelector('#train-vanilla')?.addEventListener('click', () => { if (!state.jobRunning()) actions.train('vanilla'); });
  headerSection.querySelector('#export')?.addEventListener('click', () => actions.exportAdapter());
  headerSection.querySelector('#check-placement')?.addEventListener('click', () => { if (!state.jobRunning()) actions.checkPlacement(); });
  headerSection.querySelector('#compare-datasets')?.addEventListener('click', () => actions.compareDatasets());
  headerSection.querySelector('#rerun')?.addEventListener('click', () => { if (!state.jobRunning()) actions.rerunProbe(); });
}

function chip(iconName: string, text: string, title?: string, id?: string): HTMLElement {
  return h('span', { class: 'chip', title, id }, icon(iconName), h('span', {}, text));
}

export function renderBanner(): void {
  const job = state.panelState()!.job;
  if (!job || job.kind !== 'probe') { bannerSection.replaceChildren(); return; }
  const p = job.progress;
  const frac = p && p.total > 0 && p.phase === 'probe' ? p.done / p.total : undefined;
  const text = !p ? 'Starting the worker…'
    : p.phase === 'probe' ? `Probing: ${p.done}/${p.total} records${p.etaSeconds !== undefined ? ` · ETA ${duration(p.etaSeconds)}` : ''}`
      : `${p.phase[0]!.toUpperCase()}${p.phase.slice(1)}${p.total > 0 ? ` ${p.done}/${p.total}` : ''}…${p.message ? ` ${p.message}` : ''}`;
  const bar = h('div', { class: 'bar' }, h('div', { class: frac === undefined ? 'fill indeterminate' : 'fill' }));
  if (frac !== undefined) (bar.firstChild as HTMLElement).style.width = `${(frac * 100).toFixed(1)}%`;
  const cancel = button('cancel-job', 'Cancel', 'debug-stop', { secondary: true });
  cancel.addEventListener('click', () => actions.cancel());
  bannerSection.replaceChildren(h('div', { class: 'banner', role: 'status' },
    h('vscode-progress-ring', { class: 'ring' }), h('div', { class: 'banner-body' }, h('div', { class: 'banner-text' }, text), bar), cancel));
}

export function renderSummary(): void {
  const s = state.panelState()!;
  const r = s.report;
  if (!r) {
    const run = button('run-probe', 'Run PAGE Probe', 'flame', { disabled: state.jobRunning() });
    run.addEventListener('click', () => actions.rerunProbe());
    summarySection.replaceChildren(h('div', { class: 'empty-state' },
      icon('graph', 'empty-icon'),
      h('h2', {}, `No PAGE report for ${s.modelName} yet`),
      h('p', {}, 'The probe measures, for every linear projection of every layer, how much a LoRA adapter placed there would learn at its first step. It takes seconds to minutes.'),
      run));
    return;
  }
  const d = r.dominant;
  const st = stabilityClass(d.stability);
  const dominant = h('div', { class: 'card dominant-card' },
    h('div', { class: 'card-label' }, icon('star-full', 'star'), 'Dominant module'),
    h('div', { class: 'card-value' }, moduleLabel(d.name, r), h('span', { class: 'big-share' }, percent(d.share))),
    h('div', { class: 'card-note' },
      h('span', { class: `pill ${st.cls}`, title: `${r.config.bootstrap} bootstrap resamples of the ${r.config.samples} samples` },
        `${st.word}: wins ${percent(d.stability, 0)} of ${r.config.bootstrap} resamples`),
      h('span', { class: 'muted' }, ` runner-up ${moduleLabel(d.runnerUp.name, r)} ${percent(d.runnerUp.share)}`)),
    h('code', { class: 'module-name', title: 'Hugging Face module name' }, d.name));

  const placed = s.placement ? r.modules.find((m) => m.name === s.placement) : undefined;
  const vanilla = gridOf(r).vanillaParams;
  const placementCard = h('div', { class: 'card placement-card' },
    h('div', { class: 'card-label' }, icon('pinned', 'pin'), 'Adapter placement'),
    placed
      ? h('div', { class: 'card-value', id: 'placement-value' }, moduleLabel(placed.name, r),
        h('span', { class: 'tag' }, s.placementIsUserChoice ? 'your choice' : 'dominant'))
      : h('div', { class: 'card-value' }, '–'),
    placed
      ? h('div', { class: 'card-note' },
        h('strong', {}, `${int(placed.adapterParams)} trainable parameters`),
        h('span', { class: 'muted' }, ` · ${percent(vanilla ? placed.adapterParams / vanilla : 0, 2)} of vanilla LoRA (${compact(vanilla)}) · share ${percent(placed.share)}, rank ${placed.rank}`))
      : h('div', { class: 'card-note muted' }, 'Click a cell to place the adapter.'),
    s.placementIsUserChoice
      ? (() => {
        const b = h('vscode-button', { id: 'reset-placement', secondary: true, icon: 'discard' }, 'Back to dominant');
        b.addEventListener('click', () => actions.place(undefined));
        return b;
      })()
      : h('div', { class: 'hint muted' }, 'Click any cell (or use the arrow keys and Enter) to place it elsewhere.'));
  summarySection.replaceChildren(dominant, placementCard);
}
