// Comparing probe reports of the same model (e.g. one per task): is the dominant module the same, is its layer,
// and how similar are the module orderings (Spearman's rank correlation, top-10 overlap)? `probe --compare` compares
// two; `domlora compare` (and the extension's Compare Datasets view) any number, pair by pair, with the same code.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CompareParams, CompareResult, ProbeReport } from '../../protocol/messages';
import { badInput } from '../runtime/errors';
import { spearman } from '../runtime/stats';

export interface Comparison { sameDominant: boolean; otherDominant: string; spearman: number; top10Overlap: number; modules: number }

/** One pair of reports: the Spearman correlation of their module ranks and how many top-10 modules they share. */
function comparePair(a: ProbeReport, b: ProbeReport, names: { a?: string; b?: string } = {}): { spearman: number; top10Overlap: number; modules: number } {
  const rankB = new Map(b.modules.map((m) => [m.name, m.rank]));
  const common = a.modules.filter((m) => rankB.has(m.name));
  if (common.length !== a.modules.length || common.length !== b.modules.length) {
    const which = names.a && names.b ? `${names.a} and ${names.b}` : 'the reports';
    throw badInput(`${which} cover different modules (${a.modules.length} vs ${b.modules.length}): are they of the same model?`, names.b);
  }
  // A module alone (a one-module model) agrees with itself.
  const rho = common.length > 1 ? spearman(common.map((m) => -m.rank), common.map((m) => -rankB.get(m.name)!)) : 1;
  const topA = new Set(a.modules.filter((m) => m.rank <= 10).map((m) => m.name));
  const top10Overlap = b.modules.filter((m) => m.rank <= 10 && topA.has(m.name)).length;
  return { spearman: rho ?? 1, top10Overlap, modules: common.length };
}

/** Two reports (`probe --compare`): the comparison of `a` with `b`. */
export function compareReports(a: ProbeReport, b: ProbeReport): Comparison {
  return { sameDominant: a.dominant.name === b.dominant.name, otherDominant: b.dominant.name, ...comparePair(a, b) };
}

/** Any number of reports of one model, each with the file it came from (for the table and the messages). */
export function compareReportSet(items: { file: string; report: ProbeReport }[]): CompareResult {
  if (items.length < 2) throw badInput(`compare needs at least two reports, got ${items.length}`);
  const n = items.length;
  const rho = Array.from({ length: n }, () => new Array<number>(n).fill(1));
  const top = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  let modules = 0;
  for (let i = 0; i < n; i++) {
    top[i][i] = Math.min(10, items[i].report.modules.length);
    for (let j = i + 1; j < n; j++) {
      const c = comparePair(items[i].report, items[j].report, { a: items[i].file, b: items[j].file });
      rho[i][j] = rho[j][i] = c.spearman;
      top[i][j] = top[j][i] = c.top10Overlap;
      modules = c.modules;
    }
  }
  const reports = items.map(({ file, report: r }) => ({
    file, dataset: r.config.dataset, samples: r.config.samples,
    dominant: { name: r.dominant.name, layer: r.dominant.layer, kind: r.dominant.kind, share: r.dominant.share, stability: r.dominant.stability },
  }));
  const sameDominant = reports.every((r) => r.dominant.name === reports[0].dominant.name);
  const sameDominantLayer = reports.every((r) => r.dominant.layer === reports[0].dominant.layer);
  return { reports, spearman: rho, top10Overlap: top, sameDominant, sameDominantLayer, modules, findings: compareFindings(reports, rho, sameDominant, sameDominantLayer) };
}

function compareFindings(reports: CompareResult['reports'], rho: number[][], sameDominant: boolean, sameLayer: boolean): string[] {
  const name = (i: number) => path.basename(reports[i].dataset);
  const out: string[] = [];
  const d0 = reports[0].dominant;
  if (sameDominant) {
    out.push(`All ${reports.length} reports put the dominant module at ${d0.name} (layer ${d0.layer} · ${d0.kind}).`);
  } else if (sameLayer) {
    const kinds = [...new Set(reports.map((r) => r.dominant.kind))];
    out.push(`The dominant layer agrees: every report puts it at layer ${d0.layer}, though the module kind differs (${kinds.join(', ')}).`);
  } else {
    const byLayer = new Map<number, string[]>();
    reports.forEach((r, i) => byLayer.set(r.dominant.layer, [...(byLayer.get(r.dominant.layer) ?? []), name(i)]));
    out.push(`The dominant layer differs between the reports: ${[...byLayer].map(([l, ds]) => `layer ${l} (${ds.join(', ')})`).join('; ')}.`);
  }
  const pairs: number[] = [];
  for (let i = 0; i < reports.length; i++) for (let j = i + 1; j < reports.length; j++) pairs.push(rho[i][j]);
  const lo = Math.min(...pairs), hi = Math.max(...pairs);
  out.push(pairs.length === 1
    ? `Spearman's rank correlation of the two module orderings: ${lo.toFixed(3)}.`
    : `Spearman's rank correlation of the module orderings, pair by pair: from ${lo.toFixed(3)} to ${hi.toFixed(3)}.`);
  const unstable = reports.map((r, i) => (r.dominant.stability < 0.9 ? name(i) : '')).filter(Boolean);
  if (unstable.length) out.push(`The dominant module of ${unstable.join(', ')} won under 90% of its bootstrap resamples: its pick is not settled, so a disagreement there may be noise.`);
  return out;
}

/** Reads a report named on the command line (or by the extension), refusing what is not one. */
export function readReportFile(file: string): ProbeReport {
  let r: ProbeReport;
  try { r = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw badInput(`cannot read the report (${(e as Error).message})`, file); }
  if (!Array.isArray(r?.modules) || !r.dominant || !r.config) throw badInput('is not a DomLoRA probe report (no "modules" and "dominant")', file);
  return r;
}

/** `domlora compare R1 R2 ...`: the reports are read and checked to be of one model before they are compared. */
export function runCompare(params: CompareParams): CompareResult {
  if (!Array.isArray(params.reports) || params.reports.length < 2) throw badInput(`compare needs at least two reports, got ${params.reports?.length ?? 0}`);
  const files = params.reports.map((f) => path.resolve(f));
  const dup = files.find((f, i) => files.indexOf(f) !== i);
  if (dup) throw badInput('is named twice; compare different reports', dup);
  const items = files.map((file) => ({ file, report: readReportFile(file) }));
  const shape = (r: ProbeReport) => `${r.model.modelType}:L${r.model.layers}:H${r.model.hiddenSize}:I${r.model.intermediateSize}:V${r.model.vocabSize}`;
  const first = shape(items[0].report);
  for (const it of items.slice(1)) {
    if (shape(it.report) !== first) {
      throw badInput(`is a report of another model (${shape(it.report)}; ${items[0].file} is of ${first}): compare reports of the same model`, it.file);
    }
  }
  return compareReportSet(items);
}
