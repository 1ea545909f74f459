// Compare Datasets: several probe reports of this model, one per dataset. A matrix of their pairwise rank
// correlations (each report's dominant module named at its row), and small multiples: one small heatmap per report,
// coloured by its own largest share, with its dominant cell marked. The matrix is a grid with the heatmap's keyboard
// (arrows, Home/End; one tab stop).
import type { ComparisonView } from '../src/protocol/webview';
import * as actions from './actions';
import { h, icon } from './dom';
import { percent } from './format';
import { setHeat } from './heatmap';
import * as state from './state';

export const comparisonSection = h('section', { class: 'comparison-section', 'aria-label': 'Compare datasets' });

let lastKey = '';

export function renderComparison(): void {
  const view = state.panelState()?.comparison;
  if (!view) { comparisonSection.replaceChildren(); lastKey = ''; return; }
  const close = h('vscode-icon', { id: 'close-comparison', name: 'close', 'action-icon': true, label: 'Close the comparison', title: 'Close the comparison' });
  close.addEventListener('click', () => actions.closeComparison());
  const r = view.result;
  const summary = h('div', { class: 'compare-badges' },
    h('span', { class: `chip ${r.sameDominant ? 'good' : ''}`, id: 'same-dominant' }, icon(r.sameDominant ? 'check' : 'diff'),
      h('span', {}, r.sameDominant ? 'same dominant module' : 'dominant module differs')),
    h('span', { class: `chip ${r.sameDominantLayer ? 'good' : ''}`, id: 'same-layer' }, icon(r.sameDominantLayer ? 'check' : 'diff'),
      h('span', {}, r.sameDominantLayer ? `same dominant layer (${r.reports[0]!.dominant.layer})` : 'dominant layer differs')));
  const card = h('div', { class: 'card comparison-card', id: 'comparison' },
    h('div', { class: 'comparison-head' }, summary, close),
    h('div', { class: 'comparison-body' }, matrix(view), multiples(view)),
    h('ul', { class: 'findings' }, ...r.findings.map((f) => h('li', {}, f))));
  comparisonSection.replaceChildren(h('h2', {}, icon('git-compare'), ` Compare datasets · ${r.reports.length} reports`), card);
  const key = r.reports.map((x) => x.file).join('|');
  if (key !== lastKey) comparisonSection.scrollIntoView({ behavior: 'smooth', block: 'start' });
  lastKey = key;
}

function domLabel(d: { layer: number; kind: string }): string {
  return `L${d.layer} · ${d.kind}`;
}

function matrix(view: ComparisonView): HTMLElement {
  const r = view.result;
  const n = r.reports.length;
  const grid = h('div', { class: 'rho', role: 'grid', id: 'rho-matrix', 'aria-rowcount': n + 1, 'aria-colcount': n + 1,
    'aria-label': `Spearman rank correlation of the module orderings, ${n} reports` });
  grid.style.setProperty('--n', String(n));
  const head = h('div', { class: 'rho-row', role: 'row' }, h('span', { class: 'rho-corner', role: 'columnheader' }, 'ρ'));
  for (let j = 0; j < n; j++) head.append(h('span', { class: 'rho-colhead', role: 'columnheader', title: r.reports[j]!.file }, `R${j + 1}`));
  grid.append(head);
  for (const [i, g] of view.grids.entries()) {
    const d = r.reports[i]!.dominant;
    const row = h('div', { class: 'rho-row', role: 'row' },
      h('span', { class: 'rho-rowhead', role: 'rowheader', title: r.reports[i]!.file },
        h('span', { class: 'rho-name' }, `R${i + 1} ${g.label}`), h('span', { class: 'rho-dom' }, icon('star-full', 'star'), ` ${domLabel(d)} ${percent(d.share)}`)));
    for (let j = 0; j < n; j++) {
      const v = r.spearman[i]![j]!;
      const cell = h('span', { class: `rho-cell${i === j ? ' diag' : ''}`, role: 'gridcell', tabindex: i === 0 && j === 1 ? 0 : -1, 'data-i': i, 'data-j': j,
        'aria-label': `${g.label} vs ${view.grids[j]!.label}: Spearman ${v.toFixed(3)}, top-10 overlap ${r.top10Overlap[i]![j]}` +
          `${r.reports[i]!.dominant.name === r.reports[j]!.dominant.name ? ', same dominant module' : ''}` },
      h('span', { class: 'val' }, v.toFixed(2)));
      // Colour from -1 (background) to 1 (hot): a negative correlation stays cool.
      setHeat(cell, Math.max(0, (v + 1) / 2));
      if (r.reports[i]!.dominant.name === r.reports[j]!.dominant.name && i !== j) cell.classList.add('same-dom');
      row.append(cell);
    }
    grid.append(row);
  }
  grid.addEventListener('keydown', (e: KeyboardEvent) => {
    const c = (e.target as HTMLElement).closest<HTMLElement>('.rho-cell');
    if (!c) return;
    let i = Number(c.dataset.i), j = Number(c.dataset.j);
    switch (e.key) {
      case 'ArrowUp': i--; break;
      case 'ArrowDown': i++; break;
      case 'ArrowLeft': j--; break;
      case 'ArrowRight': j++; break;
      case 'Home': j = 0; if (e.ctrlKey) i = 0; break;
      case 'End': j = n - 1; if (e.ctrlKey) i = n - 1; break;
      default: return;
    }
    e.preventDefault();
    i = Math.max(0, Math.min(n - 1, i));
    j = Math.max(0, Math.min(n - 1, j));
    const next = grid.querySelector<HTMLElement>(`.rho-cell[data-i="${i}"][data-j="${j}"]`);
    if (!next) return;
    for (const x of grid.querySelectorAll<HTMLElement>('.rho-cell')) x.tabIndex = x === next ? 0 : -1;
    next.focus();
  });
  return h('div', { class: 'rho-wrap' }, h('div', { class: 'card-label' }, icon('table'), 'Rank correlation of the orderings'), grid,
    h('p', { class: 'caption muted' }, 'Spearman ρ of the modules ordered by PAGE, report by report; an outlined cell: the two share the dominant module.'));
}

function multiples(view: ComparisonView): HTMLElement {
  const { kinds, layers } = view;
  const wrap = h('div', { class: 'multiples', id: 'multiples' });
  for (const [i, g] of view.grids.entries()) {
    const d = view.result.reports[i]!.dominant;
    const max = Math.max(...g.shares, 1e-12);
    const mini = h('div', { class: 'mini', role: 'img', 'aria-label': `${g.label}: dominant ${domLabel(d)}, ${percent(d.share)} of PAGE` });
    mini.style.setProperty('--cols', String(kinds.length));
    mini.style.setProperty('--cell', `${Math.max(4, Math.min(22, Math.floor(260 / Math.max(layers, kinds.length))))}px`);
    for (let l = 0; l < layers; l++) {
      for (let k = 0; k < kinds.length; k++) {
        const share = g.shares[l * kinds.length + k] ?? 0;
        const c = h('span', { class: 'mini-cell', title: `${g.label} · layer ${l} · ${kinds[k]}: ${percent(share, 2)}` });
        setHeat(c, share / max);
        if (l === d.layer && kinds[k] === d.kind) c.classList.add('dominant');
        mini.append(c);
      }
    }
    wrap.append(h('figure', { class: 'mini-figure', 'data-i': i },
      h('figcaption', {}, h('strong', {}, `R${i + 1} ${g.label}`), h('span', { class: 'muted' }, icon('star-full', 'star'), ` ${domLabel(d)} · ${percent(d.share)}`)),
      mini));
  }
  return h('div', { class: 'multiples-wrap' }, h('div', { class: 'card-label' }, icon('flame'), `Share of PAGE per module, each report on its own scale (${layers} layers × ${kinds.length} kinds)`), wrap);
}
