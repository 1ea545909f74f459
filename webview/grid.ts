// The heatmap's derived values: the report as a layers x kinds grid with its sums. Pure, no DOM.
import type { ProbeModule } from '../src/protocol/messages';
import type { HeatmapReport } from '../src/protocol/webview';
import { groupLabel, moduleGroup } from './format';

export interface Grid {
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

export function buildGrid(report: HeatmapReport): Grid {
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
export function rowHeight(layers: number): number {
  if (layers <= 6) return 46;
  if (layers <= 12) return 32;
  if (layers <= 24) return 22;
  if (layers <= 40) return 15;
  if (layers <= 64) return 11;
  return 9;
}

let last: { report: HeatmapReport; grid: Grid } | undefined;

/** The grid of a report, built once per report the host sent (the heatmap and the placement card both read it). */
export function gridOf(report: HeatmapReport): Grid {
  if (last?.report !== report) last = { report, grid: buildGrid(report) };
  return last.grid;
}
