// The PAGE heatmap webview: draws the state the host sends (report, placement, runs, job) and sends back the user's
// actions, one message each. Browser code only: the DOM and the protocol, never `vscode` or node.
import {
  CancelCommand, ExportCommand, PlaceCommand, ReadyCommand, RerunProbeCommand, RevealCommand, StateNotification,
  TrainCommand, TrainPointNotification,
  type HeatmapReport, type MessageType, type PanelState, type Preset, type RunView, type WebviewPersistedState,
} from '../src/protocol/webview';
import { moduleLabel, type ProbeModule } from '../src/protocol/messages';
import { lossRange, renderChart } from './chart';
import {
  basename, colourPosition, compact, duration, groupLabel, int, labelledRows, legendTicks, moduleGroup, percent, sci,
} from './format';

interface VsCodeApi { postMessage(msg: unknown): void; getState(): unknown; setState(state: unknown): void }
declare function acquireVsCodeApi(): VsCodeApi;

const api = acquireVsCodeApi();
const persisted: WebviewPersistedState = { scale: 'linear', ...(api.getState() as Partial<WebviewPersistedState> | undefined) };
let state: PanelState | undefined = persisted.snapshot;
const app = document.getElementById('app')!;

function send<P>(type: MessageType<P>, params: P): void {
  api.postMessage(type.make(params));
}

function save(): void {
  api.setState(persisted);
}

// ---- DOM helpers ------------------------------------------------------------------------------------------------

type Attrs = Record<string, string | number | boolean | undefined>;
type Child = Node | string | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs, ...children: Child[]): HTMLElementTagNameMap[K];
function h(tag: string, attrs?: Attrs, ...children: Child[]): HTMLElement;
function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === 'class') e.className = String(v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== undefined && c !== false) e.append(c);
  return e;
}

function icon(name: string, extra = ''): HTMLElement {
  return h('span', { class: `codicon codicon-${name} ${extra}`.trim(), 'aria-hidden': 'true' });
}

function button(id: string, label: string, iconName: string, opts: { secondary?: boolean; disabled?: boolean; title?: string } = {}): HTMLElement {
  return h('vscode-button', {
    id, icon: iconName, secondary: opts.secondary, disabled: opts.disabled, title: opts.title,
  }, label);
}

// ---- Derived values ---------------------------------------------------------------------------------------------

interface Grid {
  report: HeatmapReport;
  layers: number;
  kinds: string[];
  groups: { label: string; span: number }[];
  cells: (ProbeModule | undefined)[][];
  maxShare: number;
  layerShare: number[];
  kindShare: number[];
  vanillaParams: number;
}

function buildGrid(report: HeatmapReport): Grid {
  const kinds = report.kinds.length ? report.kinds : [...new Set(report.modules.map((m) => m.kind))];
  const layers = Math.max(report.model.layers, ...report.modules.map((m) => m.layer + 1));
  const cells: (ProbeModule | undefined)[][] = Array.from({ length: layers }, () => kinds.map(() => undefined));
  const layerShare = new Array<number>(layers).fill(0);
  const kindShare = new Array<number>(kinds.length).fill(0);
  let maxShare = 0;
  let vanillaParams = 0;
  for (const m of report.modules) {
    const k = kinds.indexOf(m.kind);
    if (k < 0 || m.layer < 0 || m.layer >= layers) continue;
    cells[m.layer]![k] = m;
    layerShare[m.layer]! += m.share;
    kindShare[k]! += m.share;
    maxShare = Math.max(maxShare, m.share);
    vanillaParams += m.adapterParams;
  }
  // Column groups (attention | MLP), from the module names of the first layer that has each kind.
  const groups: { label: string; span: number }[] = [];
  for (const [k, kind] of kinds.entries()) {
    const m = report.modules.find((x) => x.kind === kind);
    const label = groupLabel(m ? moduleGroup(m.name) : undefined);
    const last = groups[groups.length - 1];
    if (last && last.label === label) last.span++;
    else groups.push({ label, span: 1 });
    void k;
  }
  return { report, layers, kinds, groups, cells, maxShare, layerShare, kindShare, vanillaParams };
}

/** Row height by layer count: roomy for 5 layers, still readable (and hoverable) at 80. */
function rowHeight(layers: number): number {
  if (layers <= 6) return 46;
  if (layers <= 12) return 32;
  if (layers <= 24) return 22;
  if (layers <= 40) return 15;
  if (layers <= 64) return 11;
  return 9;
}

function stabilityClass(s: number): { cls: string; word: string } {
  if (s >= 0.9) return { cls: 'good', word: 'stable' };
  if (s >= 0.6) return { cls: 'fair', word: 'fairly stable' };
  return { cls: 'poor', word: 'uncertain' };
}

function jobRunning(): boolean {
  return !!state?.job;
}

// ---- Rendering --------------------------------------------------------------------------------------------------

let grid: Grid | undefined;
let gridKey = '';
const sections = {
  header: h('header', { class: 'hdr' }),
  banner: h('div', { class: 'banner-slot' }),
  summary: h('section', { class: 'summary' }),
  heat: h('section', { class: 'heat-section', 'aria-label': 'PAGE heatmap' }),
  runs: h('section', { class: 'runs', 'aria-label': 'Training runs' }),
};
const tip = h('div', { class: 'tip', role: 'tooltip', id: 'tip', hidden: true });

function render(): void {
  if (!state) {
    app.replaceChildren(h('p', { class: 'loading' }, 'Loading the PAGE report…'));
    return;
  }
  if (!app.contains(sections.header)) {
    app.replaceChildren(sections.header, sections.banner, sections.summary, sections.heat, sections.runs, tip);
  }
  const report = state.report;
  const key = report ? `${state.reportPath}|${report.createdAt}|${persisted.scale}` : '';
  if (key !== gridKey) {
    gridKey = key;
    grid = report ? buildGrid(report) : undefined;
    renderHeat();
  } else {
    updateMarks();
  }
  renderHeader();
  renderBanner();
  renderSummary();
  renderRuns();
}

function renderHeader(): void {
  const s = state!;
  const r = s.report;
  const busy = jobRunning();
  const hasRun = Object.values(s.runs).some((run) => run?.status === 'done');
  const actions = h('div', { class: 'actions' },
    button('train-domlora', 'Train DomLoRA', 'play', {
      disabled: busy || !s.placement, title: s.placement ? `Train one LoRA adapter at ${moduleLabel(s.placement, r)}` : 'Run the probe first',
    }),
    button('train-vanilla', 'Train vanilla LoRA', 'layers', { secondary: true, disabled: busy, title: 'The baseline: LoRA on every projection of every layer' }),
    button('export', 'Export…', 'export', { secondary: true, disabled: busy || !hasRun, title: hasRun ? 'Export the trained adapter' : 'Train an adapter first' }),
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
    chips.push(chip('circuit-board', `${r.config.backend} · ${duration(r.timings.probeSeconds + r.timings.loadSeconds)}`, `load ${r.timings.loadSeconds.toFixed(1)} s, probe ${r.timings.probeSeconds.toFixed(1)} s; ${new Date(r.createdAt).toLocaleString()}`));
  } else if (s.backend) {
    chips.push(chip('circuit-board', s.backend, 'backend'));
  }
  const meta = h('div', { class: 'meta' }, ...chips);
  sections.header.replaceChildren(h('div', { class: 'titlebar' }, title, actions), meta);
  sections.header.querySelector('#train-domlora')?.addEventListener('click', () => { if (!jobRunning()) send(TrainCommand, { preset: 'domlora' }); });
  sections.header.querySelector('#train-vanilla')?.addEventListener('click', () => { if (!jobRunning()) send(TrainCommand, { preset: 'vanilla' }); });
  sections.header.querySelector('#export')?.addEventListener('click', () => send(ExportCommand, {}));
  sections.header.querySelector('#rerun')?.addEventListener('click', () => { if (!jobRunning()) send(RerunProbeCommand, {}); });
}

function chip(iconName: string, text: string, title?: string): HTMLElement {
  return h('span', { class: 'chip', title }, icon(iconName), h('span', {}, text));
}

function renderBanner(): void {
  const job = state!.job;
  if (!job || job.kind !== 'probe') { sections.banner.replaceChildren(); return; }
  const p = job.progress;
  const frac = p && p.total > 0 && p.phase === 'probe' ? p.done / p.total : undefined;
  const text = !p ? 'Starting the worker…'
    : p.phase === 'probe' ? `Probing: ${p.done}/${p.total} records${p.etaSeconds !== undefined ? ` · ETA ${duration(p.etaSeconds)}` : ''}`
      : `${p.phase[0]!.toUpperCase()}${p.phase.slice(1)}${p.total > 0 ? ` ${p.done}/${p.total}` : ''}…${p.message ? ` ${p.message}` : ''}`;
  const bar = h('div', { class: 'bar' }, h('div', { class: frac === undefined ? 'fill indeterminate' : 'fill' }));
  if (frac !== undefined) (bar.firstChild as HTMLElement).style.width = `${(frac * 100).toFixed(1)}%`;
  const cancel = button('cancel-job', 'Cancel', 'debug-stop', { secondary: true });
  cancel.addEventListener('click', () => send(CancelCommand, {}));
  sections.banner.replaceChildren(h('div', { class: 'banner', role: 'status' },
    h('vscode-progress-ring', { class: 'ring' }), h('div', { class: 'banner-body' }, h('div', { class: 'banner-text' }, text), bar), cancel));
}

function renderSummary(): void {
  const s = state!;
  const r = s.report;
  if (!r) {
    const run = button('run-probe', 'Run PAGE Probe', 'flame', { disabled: jobRunning() });
    run.addEventListener('click', () => send(RerunProbeCommand, {}));
    sections.summary.replaceChildren(h('div', { class: 'empty-state' },
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
  const vanilla = grid?.vanillaParams ?? 0;
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
        b.addEventListener('click', () => place(undefined));
        return b;
      })()
      : h('div', { class: 'hint muted' }, 'Click any cell (or use the arrow keys and Enter) to place it elsewhere.'));
  sections.summary.replaceChildren(dominant, placementCard);
}

function renderHeat(): void {
  tip.hidden = true;
  if (!grid) { sections.heat.replaceChildren(); return; }
  const g = grid;
  const rowH = rowHeight(g.layers);
  const dense = rowH < 14;
  const labelEvery = dense ? Math.ceil(14 / rowH) : 1;

  // Toolbar: scale toggle and legend.
  const scale = h('vscode-radio-group', { id: 'scale', variant: 'horizontal', 'aria-label': 'Colour scale' },
    h('vscode-radio', { label: 'Linear', value: 'linear', name: 'scale', checked: persisted.scale === 'linear' }),
    h('vscode-radio', { label: 'Log', value: 'log', name: 'scale', checked: persisted.scale === 'log' }));
  scale.addEventListener('change', () => {
    const radios = [...scale.querySelectorAll('vscode-radio')] as (HTMLElement & { checked?: boolean; value?: string })[];
    const next = radios.find((r) => r.checked)?.value;
    if ((next === 'linear' || next === 'log') && next !== persisted.scale) { persisted.scale = next; save(); render(); }
  });
  const legend = h('div', { class: 'legend', 'aria-label': 'Colour legend: share of total PAGE' });
  const ramp = h('div', { class: 'ramp' });
  for (let i = 0; i < 32; i++) {
    const sw = h('span', { class: 'sw' });
    setHeat(sw, i / 31);
    ramp.append(sw);
  }
  const ticks = h('div', { class: 'ticks' });
  const tv = legendTicks(g.maxShare, persisted.scale);
  for (const [i, v] of tv.entries()) {
    const t = h('span', { class: 'tick' }, persisted.scale === 'log' && i === 0 ? `≤${percent(v, 2)}` : percent(v, v < 0.01 ? 2 : 1));
    t.style.left = `${(colourPosition(v, g.maxShare, persisted.scale) * 100).toFixed(1)}%`;
    ticks.append(t);
  }
  legend.append(h('span', { class: 'legend-title' }, 'share of PAGE'), h('div', { class: 'ramp-wrap' }, ramp, ticks));
  const key = h('div', { class: 'key' },
    h('span', {}, icon('star-full', 'star'), ' dominant'),
    h('span', {}, icon('pinned', 'pin'), ' adapter'));
  const toolbar = h('div', { class: 'heat-toolbar' }, h('div', { class: 'scale' }, h('span', { class: 'muted' }, 'Colour'), scale), legend, key);

  // The grid itself.
  const table = h('div', { class: `heat${dense ? ' dense' : ''}`, role: 'grid', id: 'heatmap', 'aria-rowcount': g.layers + 2, 'aria-colcount': g.kinds.length + 2,
    'aria-label': `PAGE share per module: ${g.layers} layers by ${g.kinds.length} module kinds` });
  table.style.setProperty('--row-h', `${rowH}px`);
  table.style.setProperty('--cols', String(g.kinds.length));
  // Column group header (attention | MLP).
  const groupRow = h('div', { class: 'hrow groups', role: 'presentation' }, h('span', { class: 'corner' }));
  for (const gr of g.groups) {
    const cell = h('span', { class: 'group' }, h('span', {}, gr.label));
    cell.style.gridColumn = `span ${gr.span}`;
    groupRow.append(cell);
  }
  groupRow.append(h('span', {}));
  const headRow = h('div', { class: 'hrow kinds', role: 'row' }, h('span', { class: 'corner', role: 'columnheader' }, 'layer'));
  for (const [k, kind] of g.kinds.entries()) {
    headRow.append(h('span', { class: 'colhead', role: 'columnheader', 'data-k': k, title: `${kind}: ${percent(g.kindShare[k]!)} of PAGE over all layers` }, kind));
  }
  headRow.append(h('span', { class: 'colhead sum', role: 'columnheader' }, 'per layer'));
  table.append(groupRow, headRow);

  const maxLayer = Math.max(...g.layerShare, 1e-12);
  const dominantLayer = g.report.dominant.layer;
  const labelled = labelledRows(g.layers, labelEvery, dominantLayer);
  for (let l = 0; l < g.layers; l++) {
    const row = h('div', { class: 'row', role: 'row', 'data-l': l, 'aria-rowindex': l + 3 });
    const showLabel = !dense || labelled.has(l);
    row.append(h('span', { class: `rowhead${l === dominantLayer ? ' dom' : ''}`, role: 'rowheader', 'data-l': l }, showLabel ? String(l) : ''));
    for (let k = 0; k < g.kinds.length; k++) {
      const m = g.cells[l]![k];
      if (!m) { row.append(h('span', { class: 'cell missing', role: 'gridcell', 'aria-disabled': 'true' })); continue; }
      const t = colourPosition(m.share, g.maxShare, persisted.scale);
      const cell = h('span', {
        class: 'cell', role: 'gridcell', tabindex: -1, 'data-l': l, 'data-k': k, 'data-name': m.name,
        'aria-label': `layer ${l} ${m.kind}: ${percent(m.share)} of PAGE, rank ${m.rank} of ${g.report.modules.length}, ${int(m.adapterParams)} adapter parameters`,
      });
      setHeat(cell, t);
      if (rowH >= 22) cell.append(h('span', { class: 'val' }, m.share >= 0.0005 ? percent(m.share) : '·'));
      row.append(cell);
    }
    const fill = h('span', { class: `fill${l === dominantLayer ? ' dom' : ''}` });
    fill.style.width = `${((g.layerShare[l]! / maxLayer) * 100).toFixed(1)}%`;
    const bar = h('span', { class: 'layerbar', title: `layer ${l}: ${percent(g.layerShare[l]!)} of PAGE` },
      h('span', { class: 'track' }, fill), h('span', { class: 'lbl' }, rowH >= 15 ? percent(g.layerShare[l]!) : ''));
    row.append(bar);
    table.append(row);
  }
  // Footer: share per module kind.
  const maxKind = Math.max(...g.kindShare, 1e-12);
  const foot = h('div', { class: 'hrow foot', role: 'row' }, h('span', { class: 'corner', role: 'rowheader' }, 'per kind'));
  for (let k = 0; k < g.kinds.length; k++) {
    const fill = h('span', { class: `fill${g.kinds[k] === g.report.dominant.kind ? ' dom' : ''}` });
    fill.style.height = `${((g.kindShare[k]! / maxKind) * 100).toFixed(1)}%`;
    const b = h('span', { class: 'kindbar', title: `${g.kinds[k]}: ${percent(g.kindShare[k]!)} of PAGE over all layers` },
      h('span', { class: 'track' }, fill), h('span', { class: 'lbl' }, percent(g.kindShare[k]!)));
    foot.append(b);
  }
  foot.append(h('span', {}));
  table.append(foot);

  table.addEventListener('mouseover', onCellHover);
  table.addEventListener('mouseleave', () => { tip.hidden = true; highlight(undefined); });
  table.addEventListener('click', onCellClick);
  table.addEventListener('keydown', onGridKey);
  table.addEventListener('focusin', (e) => {
    const c = (e.target as HTMLElement).closest<HTMLElement>('.cell[data-name]');
    if (c) { showTip(c); highlight(c); }
  });
  table.addEventListener('focusout', () => { tip.hidden = true; });

  const caption = h('p', { class: 'caption muted' },
    `${g.layers} layers × ${g.kinds.length} module kinds = ${g.report.modules.length} candidate modules. `
    + 'Colour: each module\'s share of the total expected PAGE (the energy of the adapter\'s first gradient). '
    + 'Hover for details; click a cell to place the adapter there.');
  sections.heat.replaceChildren(toolbar, h('div', { class: 'heat-scroll' }, table), caption);
  updateMarks();
}

/** Colours an element by position t in [0, 1] on the three-stop theme ramp (background -> mid -> hot). */
function setHeat(e: HTMLElement, t: number): void {
  const hot = t > 0.5;
  e.classList.toggle('upper', hot);
  e.classList.toggle('hot', t > 0.62);
  e.style.setProperty('--u', (hot ? (t - 0.5) * 2 : t * 2).toFixed(3));
}

/** Marks the dominant and the placed cells and sets the roving tabindex, without rebuilding the grid. */
function updateMarks(): void {
  const table = sections.heat.querySelector<HTMLElement>('#heatmap');
  if (!table || !grid || !state) return;
  const dom = grid.report.dominant.name;
  const placed = state.placement;
  for (const c of table.querySelectorAll<HTMLElement>('.cell[data-name]')) {
    const name = c.dataset.name!;
    const isDom = name === dom;
    const isPlaced = name === placed;
    c.classList.toggle('dominant', isDom);
    c.classList.toggle('placed', isPlaced);
    c.setAttribute('aria-selected', String(isPlaced));
    let marks = c.querySelector('.marks');
    if (isDom || isPlaced) {
      if (!marks) { marks = h('span', { class: 'marks', 'aria-hidden': 'true' }); c.append(marks); }
      marks.replaceChildren(...(isDom ? [icon('star-full', 'star')] : []), ...(isPlaced ? [icon('pinned', 'pin')] : []));
    } else {
      marks?.remove();
    }
  }
  // Roving tabindex: the focused cell, else the placement, else the dominant cell, is the one in the tab order.
  const f = persisted.focus;
  let target = f ? cellAt(f.layer, f.kind) : null;
  target ??= table.querySelector<HTMLElement>('.cell.placed') ?? table.querySelector<HTMLElement>('.cell.dominant');
  for (const c of table.querySelectorAll<HTMLElement>('.cell[data-name]')) c.tabIndex = c === target ? 0 : -1;
}

function cellAt(layer: number, kind: number): HTMLElement | null {
  return sections.heat.querySelector<HTMLElement>(`.cell[data-l="${layer}"][data-k="${kind}"]`);
}

function moduleOf(c: HTMLElement): ProbeModule | undefined {
  const l = Number(c.dataset.l);
  const k = Number(c.dataset.k);
  return grid?.cells[l]?.[k];
}

function highlight(c: HTMLElement | undefined): void {
  const l = c?.dataset.l;
  const k = c?.dataset.k;
  for (const e of sections.heat.querySelectorAll<HTMLElement>('.rowhead, .colhead')) {
    e.classList.toggle('hl', (e.classList.contains('rowhead') && e.dataset.l === l) || (e.classList.contains('colhead') && e.dataset.k === k && k !== undefined));
  }
}

function onCellHover(e: MouseEvent): void {
  const c = (e.target as HTMLElement).closest<HTMLElement>('.cell[data-name]');
  if (!c) return;
  showTip(c);
  highlight(c);
}

function showTip(c: HTMLElement): void {
  const m = moduleOf(c);
  if (!m || !grid || !state) return;
  const isDom = m.name === grid.report.dominant.name;
  const isPlaced = m.name === state.placement;
  const rows: [string, string][] = [
    ['share of PAGE', `${percent(m.share, 2)}  ·  rank ${m.rank} of ${grid.report.modules.length}`],
    ['expected PAGE', sci(m.pageExpected)],
    [`sampled PAGE (seed ${grid.report.config.seed})`, sci(m.pageSampled)],
    [`adapter, r = ${grid.report.config.rank}`, `${int(m.adapterParams)} params (${m.dIn} in + ${m.dOut} out)`],
  ];
  tip.replaceChildren(
    h('div', { class: 'tip-title' }, moduleLabel(m.name, grid.report), isDom ? h('span', { class: 'tip-badge dom' }, icon('star-full'), ' dominant') : undefined,
      isPlaced ? h('span', { class: 'tip-badge placed' }, icon('pinned'), ' adapter') : undefined),
    h('code', { class: 'tip-name' }, m.name),
    h('table', {}, ...rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v)))),
    h('div', { class: 'tip-hint' }, isPlaced ? 'The adapter is placed here.' : 'Click (or Enter) to place the adapter here.'));
  tip.hidden = false;
  const r = c.getBoundingClientRect();
  const tr = tip.getBoundingClientRect();
  let x = r.right + 10;
  if (x + tr.width > window.innerWidth - 8) x = r.left - tr.width - 10;
  if (x < 8) x = Math.max(8, Math.min(window.innerWidth - tr.width - 8, r.left));
  let y = r.top + r.height / 2 - tr.height / 2;
  y = Math.max(8, Math.min(window.innerHeight - tr.height - 8, y));
  tip.style.left = `${x + window.scrollX}px`;
  tip.style.top = `${y + window.scrollY}px`;
}

function place(module: string | undefined): void {
  if (!state) return;
  const dominant = state.report?.dominant.name;
  state.placement = module ?? dominant;
  state.placementIsUserChoice = !!module && module !== dominant;
  persisted.snapshot = state;
  save();
  updateMarks();
  renderSummary();
  renderHeader();
  send(PlaceCommand, { module });
}

function onCellClick(e: MouseEvent): void {
  const c = (e.target as HTMLElement).closest<HTMLElement>('.cell[data-name]');
  if (!c) return;
  focusCell(c);
  place(c.dataset.name);
  showTip(c);
}

function focusCell(c: HTMLElement): void {
  persisted.focus = { layer: Number(c.dataset.l), kind: Number(c.dataset.k) };
  save();
  for (const x of sections.heat.querySelectorAll<HTMLElement>('.cell[tabindex="0"]')) if (x !== c) x.tabIndex = -1;
  c.tabIndex = 0;
  c.focus({ preventScroll: false });
  c.scrollIntoView({ block: 'nearest', inline: 'nearest' });
}

function onGridKey(e: KeyboardEvent): void {
  const c = (e.target as HTMLElement).closest<HTMLElement>('.cell[data-name]');
  if (!c || !grid) return;
  let l = Number(c.dataset.l);
  let k = Number(c.dataset.k);
  switch (e.key) {
    case 'ArrowUp': l--; break;
    case 'ArrowDown': l++; break;
    case 'ArrowLeft': k--; break;
    case 'ArrowRight': k++; break;
    case 'Home': k = 0; if (e.ctrlKey) l = 0; break;
    case 'End': k = grid.kinds.length - 1; if (e.ctrlKey) l = grid.layers - 1; break;
    case 'PageUp': l -= 8; break;
    case 'PageDown': l += 8; break;
    case 'Enter':
    case ' ':
      e.preventDefault();
      place(c.dataset.name);
      showTip(c);
      return;
    default:
      return;
  }
  e.preventDefault();
  l = Math.max(0, Math.min(grid.layers - 1, l));
  k = Math.max(0, Math.min(grid.kinds.length - 1, k));
  const next = cellAt(l, k);
  if (next) focusCell(next);
}

// ---- Runs -------------------------------------------------------------------------------------------------------

const PRESET_TITLE: Record<Preset, string> = { domlora: 'DomLoRA', vanilla: 'Vanilla LoRA' };

let lastRunningKey = '';

function renderRuns(): void {
  const s = state!;
  const runs = s.runs;
  // A run that just started: bring the training section into view, so its live curve is seen.
  const running = (['domlora', 'vanilla'] as Preset[]).find((p) => runs[p]?.status === 'running');
  const runningKey = running ? `${running}|${runs[running]!.startedAt}` : '';
  const justStarted = runningKey !== '' && runningKey !== lastRunningKey;
  lastRunningKey = runningKey;
  const any = runs.domlora || runs.vanilla;
  if (!any) { sections.runs.replaceChildren(); return; }
  const yRange = lossRange([runs.domlora?.curve ?? [], runs.vanilla?.curve ?? []]);
  const cards = (['domlora', 'vanilla'] as Preset[]).map((p) => runCard(p, runs[p], yRange));
  const children: Child[] = [h('h2', {}, icon('pulse'), ' Training'), h('div', { class: 'run-grid' }, ...cards)];
  const d = runs.domlora?.status === 'done' ? runs.domlora : undefined;
  const v = runs.vanilla?.status === 'done' ? runs.vanilla : undefined;
  if (d && v) children.push(comparison(d, v));
  sections.runs.replaceChildren(...children.filter((c): c is Node | string => !!c));
  // Charts are drawn once the cards have a width.
  for (const p of ['domlora', 'vanilla'] as Preset[]) drawChart(p, yRange);
  if (justStarted) sections.runs.querySelector(`[data-preset="${running}"]`)?.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
}

function runCard(preset: Preset, run: RunView | undefined, _yRange: [number, number] | undefined): HTMLElement {
  void _yRange;
  const title = h('div', { class: 'run-title' }, icon(preset === 'domlora' ? 'target' : 'layers'), h('span', {}, PRESET_TITLE[preset]));
  if (!run) {
    const b = button(`train-${preset}-empty`, `Train ${preset === 'domlora' ? 'DomLoRA' : 'vanilla LoRA'}`, 'play', { secondary: true, disabled: jobRunning() });
    b.addEventListener('click', () => send(TrainCommand, { preset }));
    return h('div', { class: 'card run-card empty', 'data-preset': preset }, h('div', { class: 'run-head' }, title),
      h('p', { class: 'muted' }, preset === 'vanilla'
        ? 'The baseline: LoRA of the same rank on every projection of every layer. Train it to compare loss and size.'
        : 'One adapter at the placed module; everything else frozen.'), b);
  }
  const targetText = preset === 'domlora' ? (run.targets[0] ? moduleLabel(run.targets[0], state?.report) : '') : `all ${state?.report?.modules.length ?? ''} modules`;
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
    c.addEventListener('click', () => send(CancelCommand, {}));
    children.push(h('div', { class: 'run-actions' }, c));
  }
  if (res?.adapterDir) {
    const link = h('a', { href: '#', class: 'adapter-link', title: res.adapterDir }, icon('folder'), ` ${basename(res.adapterDir)}`);
    link.addEventListener('click', (e) => { e.preventDefault(); send(RevealCommand, { path: res.adapterDir }); });
    children.push(h('div', { class: 'run-actions' }, link));
  }
  if (run.error && run.status === 'failed') children.push(h('p', { class: 'error-text' }, run.error));
  return h('div', { class: `card run-card ${run.status}`, 'data-preset': preset, 'data-status': run.status }, ...children);
}

function drawChart(preset: Preset, yRange: [number, number] | undefined): void {
  const run = state?.runs[preset];
  const box = sections.runs.querySelector<HTMLElement>(`#chart-${preset}`);
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

// ---- Messages from the host -------------------------------------------------------------------------------------

window.addEventListener('message', (e: MessageEvent) => {
  const msg = e.data as unknown;
  if (StateNotification.is(msg)) {
    state = msg.params;
    persisted.modelDir = state.modelDir;
    persisted.snapshot = state;
    save();
    render();
  } else if (TrainPointNotification.is(msg) && state) {
    const { preset, point, total, etaSeconds } = msg.params;
    const run = state.runs[preset];
    if (!run || run.status !== 'running') return;
    const last = run.curve[run.curve.length - 1];
    if (last && last.step === point.step) Object.assign(last, point);
    else run.curve.push(point);
    run.steps = total;
    run.etaSeconds = etaSeconds;
    renderRuns();
  }
});

let resizeTimer: number | undefined;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => { if (state) renderRuns(); tip.hidden = true; }, 120);
});

render();
send(ReadyCommand, { modelDir: persisted.modelDir ?? document.body.dataset.modelDir });
