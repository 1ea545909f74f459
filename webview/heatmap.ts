// The heatmap: one cell per module (layers x module kinds) coloured by its share of PAGE, with the colour scale and
// legend, sums per layer and per kind, a tooltip, and the keyboard (arrows, Home/End, Page Up/Down, Enter/Space).
// A click or Enter places the adapter through actions.place.
import { moduleLabel, type ProbeModule } from '../src/protocol/messages';
import * as actions from './actions';
import { h, icon } from './dom';
import { colourPosition, int, labelledRows, legendTicks, percent, sci } from './format';
import { gridOf, rowHeight, type Grid } from './grid';
import * as state from './state';

export const heatSection = h('section', { class: 'heat-section', 'aria-label': 'PAGE heatmap' });
export const tip = h('div', { class: 'tip', role: 'tooltip', id: 'tip', hidden: true });

let grid: Grid | undefined;
let gridKey = '';

/** Rebuilds the grid when the report or the colour scale changed; otherwise only moves the marks. */
export function renderHeatmap(): void {
  const s = state.panelState()!;
  const report = s.report;
  const key = report ? `${s.reportPath}|${report.createdAt}|${state.scale()}` : '';
  if (key !== gridKey) {
    gridKey = key;
    grid = report ? gridOf(report) : undefined;
    renderHeat();
  } else {
    updateMarks();
  }
}

function renderHeat(): void {
  tip.hidden = true;
  if (!grid) { heatSection.replaceChildren(); return; }
  const g = grid;
  const rowH = rowHeight(g.layers);
  const dense = rowH < 14;
  const labelEvery = dense ? Math.ceil(14 / rowH) : 1;

  // Toolbar: scale toggle and legend.
  const scale = h('vscode-radio-group', { id: 'scale', variant: 'horizontal', 'aria-label': 'Colour scale' },
    h('vscode-radio', { label: 'Linear', value: 'linear', name: 'scale', checked: state.scale() === 'linear' }),
    h('vscode-radio', { label: 'Log', value: 'log', name: 'scale', checked: state.scale() === 'log' }));
  scale.addEventListener('change', () => {
    const radios = [...scale.querySelectorAll('vscode-radio')] as (HTMLElement & { checked?: boolean; value?: string })[];
    const next = radios.find((r) => r.checked)?.value;
    if (next === 'linear' || next === 'log') state.setScale(next);
  });
  const legend = h('div', { class: 'legend', 'aria-label': 'Colour legend: share of total PAGE' });
  const ramp = h('div', { class: 'ramp' });
  for (let i = 0; i < 32; i++) {
    const sw = h('span', { class: 'sw' });
    setHeat(sw, i / 31);
    ramp.append(sw);
  }
  const ticks = h('div', { class: 'ticks' });
  const colourScale = state.scale();
  const tv = legendTicks(g.maxShare, colourScale);
  for (const [i, v] of tv.entries()) {
    const t = h('span', { class: 'tick' }, colourScale === 'log' && i === 0 ? `≤${percent(v, 2)}` : percent(v, v < 0.01 ? 2 : 1));
    t.style.left = `${(colourPosition(v, g.maxShare, colourScale) * 100).toFixed(1)}%`;
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
      const t = colourPosition(m.share, g.maxShare, colourScale);
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
  heatSection.replaceChildren(toolbar, h('div', { class: 'heat-scroll' }, table), caption);
  updateMarks();
}

/** Colours an element by position t in [0, 1] on the three-stop theme ramp (background -> mid -> hot). */
export function setHeat(e: HTMLElement, t: number): void {
  const hot = t > 0.5;
  e.classList.toggle('upper', hot);
  e.classList.toggle('hot', t > 0.62);
  e.style.setProperty('--u', (hot ? (t - 0.5) * 2 : t * 2).toFixed(3));
}

/** Marks the dominant and the placed cells and sets the roving tabindex, without rebuilding the grid. */
export function updateMarks(): void {
  const table = heatSection.querySelector<HTMLElement>('#heatmap');
  const s = state.panelState();
  if (!table || !grid || !s) return;
  const dom = grid.report.dominant.name;
  const placed = s.placement;
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
  const f = state.focus();
  let target = f ? cellAt(f.layer, f.kind) : null;
  target ??= table.querySelector<HTMLElement>('.cell.placed') ?? table.querySelector<HTMLElement>('.cell.dominant');
  for (const c of table.querySelectorAll<HTMLElement>('.cell[data-name]')) c.tabIndex = c === target ? 0 : -1;
}

function cellAt(layer: number, kind: number): HTMLElement | null {
  return heatSection.querySelector<HTMLElement>(`.cell[data-l="${layer}"][data-k="${kind}"]`);
}

function moduleOf(c: HTMLElement): ProbeModule | undefined {
  const l = Number(c.dataset.l);
  const k = Number(c.dataset.k);
  return grid?.cells[l]?.[k];
}

function highlight(c: HTMLElement | undefined): void {
  const l = c?.dataset.l;
  const k = c?.dataset.k;
  for (const e of heatSection.querySelectorAll<HTMLElement>('.rowhead, .colhead')) {
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
  const s = state.panelState();
  if (!m || !grid || !s) return;
  const isDom = m.name === grid.report.dominant.name;
  const isPlaced = m.name === s.placement;
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

function onCellClick(e: MouseEvent): void {
  const c = (e.target as HTMLElement).closest<HTMLElement>('.cell[data-name]');
  if (!c) return;
  focusCell(c);
  actions.place(c.dataset.name);
  showTip(c);
}

function focusCell(c: HTMLElement): void {
  state.setFocus({ layer: Number(c.dataset.l), kind: Number(c.dataset.k) });
  for (const x of heatSection.querySelectorAll<HTMLElement>('.cell[tabindex="0"]')) if (x !== c) x.tabIndex = -1;
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
      actions.place(c.dataset.name);
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
