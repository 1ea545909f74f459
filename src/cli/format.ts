// Terminal rendering of results: a summary table and a layers x kinds heatmap (colour when the terminal has it).
import type { CheckResult, CompareResult, ProbeReport, Spread } from '../protocol/messages';

export function useColour(stream: NodeJS.WriteStream): boolean {
  if (process.env.NO_COLOR) return false;
  if (process.env.FORCE_COLOR) return true;
  return Boolean(stream.isTTY) && stream.getColorDepth?.() > 1;
}

const SHADES = [' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

export function fmtNum(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1e4 || a < 1e-3 ? x.toExponential(3) : x.toPrecision(4);
}

export function fmtPct(x: number): string { return `${(100 * x).toFixed(x >= 0.1 ? 1 : 2)}%`; }

export function formatProbe(r: ProbeReport, colour: boolean): string {
  const out: string[] = [];
  const d = r.dominant;
  out.push(`PAGE probe of ${r.model.path} (${r.model.modelType}, ${r.model.layers} layers) on ${r.config.dataset}`);
  out.push(`  ${r.config.samples} records (${r.config.sampling}), ${r.tokens} supervised tokens, mean loss ${r.meanLoss.toFixed(4)}, ` +
    `rank ${r.config.rank}, alpha ${r.config.alpha}, seed ${r.config.seed}, backend ${r.config.backend}`);
  out.push('');
  out.push(`Dominant module: ${d.name}  share ${fmtPct(d.share)}  bootstrap stability ${fmtPct(d.stability)} ` +
    `(runner-up ${d.runnerUp.name}, share ${fmtPct(d.runnerUp.share)}, wins ${fmtPct(d.runnerUp.wins)})`);
  out.push('');
  out.push('Top modules by expected PAGE:');
  const top = [...r.modules].sort((a, b) => a.rank - b.rank).slice(0, 10);
  const width = Math.max(36, ...top.map((m) => m.name.length));
  out.push(`  ${'rank'.padStart(4)}  ${'module'.padEnd(width)} ${'expected'.padStart(10)} ${'sampled'.padStart(10)} ${'share'.padStart(7)} ${'params'.padStart(8)}`);
  for (const m of top) {
    out.push(`  ${String(m.rank).padStart(4)}  ${m.name.padEnd(width)} ${fmtNum(m.pageExpected).padStart(10)} ${fmtNum(m.pageSampled).padStart(10)} ${fmtPct(m.share).padStart(7)} ${String(m.adapterParams).padStart(8)}`);
  }
  out.push('');
  out.push(formatHeatmap(r, colour));
  out.push(`  timings: load ${r.timings.loadSeconds.toFixed(2)} s, probe ${r.timings.probeSeconds.toFixed(2)} s`);
  return out.join('\n');
}

/** Rows are layers, columns module kinds; each cell is two characters shaded by share of the maximum. */
export function formatHeatmap(r: ProbeReport, colour: boolean): string {
  const kinds = r.kinds;
  const max = Math.max(...r.modules.map((m) => m.share));
  const byKey = new Map(r.modules.map((m) => [`${m.layer}:${m.kind}`, m]));
  // Four characters a column: `q`, `gate`, Phi-3's `qkv`, GPT-2's `a.at` / `a.pr` / `m.fc` / `m.pr` (both blocks have a
  // c_proj), GPT-NeoX's `qkv` / `o` / `h4h` / `4hh` (three of its kinds start with `dens`).
  const NEOX: Record<string, string> = { query_key_value: 'qkv', dense: 'o', dense_h_to_4h: 'h4h', dense_4h_to_h: '4hh' };
  const short = kinds.map((k) => (NEOX[k] ?? k.replace(/^(attn|mlp)\.c_/, (_, b: string) => `${b[0]}.`).replace('_proj', '')).slice(0, 4).padEnd(5));
  const lines = [`  layer ${short.join('')}   (${colour ? 'colour' : 'shade'}: share of the largest; * = dominant)`];
  for (let l = 0; l < r.model.layers; l++) {
    let row = `  ${String(l).padStart(5)} `;
    for (const k of kinds) {
      const m = byKey.get(`${l}:${k}`);
      const f = m && max > 0 ? m.share / max : 0;
      const dom = m?.name === r.dominant.name;
      if (colour) {
        // A 256-colour ramp from dark blue through to bright yellow.
        const ramp = [17, 18, 19, 25, 31, 37, 43, 79, 115, 151, 187, 223, 226];
        const c = ramp[Math.min(ramp.length - 1, Math.floor(f * (ramp.length - 1) + 0.5))];
        row += `\x1b[48;5;${c}m${dom ? '\x1b[30m ** ' : '    '}\x1b[0m `;
      } else {
        const ch = SHADES[Math.min(SHADES.length - 1, Math.floor(f * (SHADES.length - 1) + 0.5))];
        row += (dom ? `*${ch.repeat(2)}*` : ch.repeat(4)) + ' ';
      }
    }
    lines.push(row);
  }
  return lines.join('\n');
}

/** The placement check as a table, with the correlation and the findings under it. */
export function formatCheck(r: CheckResult): string {
  const seeds = r.config.seeds;
  const pm = (s: Spread) => (s.sd !== undefined ? `${s.mean.toFixed(4)} ± ${s.sd.toFixed(4)}` : s.mean.toFixed(4));
  const out: string[] = [];
  out.push(`Placement check of ${r.model.path} (${r.model.modelType}, ${r.model.layers} layers) on ${r.data}`);
  out.push(`  ${r.config.steps} steps of ${r.config.batchSize * r.config.gradAccum} records, rank ${r.config.rank}, alpha ${r.config.alpha}, lr ${r.config.lr}, ` +
    `seq-len ${r.config.seqLen}, ${seeds.length} seed${seeds.length === 1 ? '' : 's'} (${seeds.join(', ')}), backend ${r.backend}`);
  out.push(`  ${r.trainRecords} train / ${r.evalRecords} held-out records${r.evalData ? ` (from ${r.evalData})` : ''}` +
    `${r.config.maxSamples !== undefined ? ` of the first ${r.config.maxSamples} usable` : ''}; ` +
    `held-out loss before training ${r.placements[0]?.evalLossBefore.toFixed(4) ?? '–'}; PAGE shares from ${r.report.path}`);
  out.push('');
  const rows = r.placements.map((p) => [
    p.reductionRank !== undefined ? String(p.reductionRank) : '–', p.label, p.trainableParams.toLocaleString('en-US'), fmtPct(p.share),
    pm(p.evalLossAfter), pm(p.reduction), `${p.seconds.toFixed(1)} s`,
  ]);
  const head = ['rank', 'placement', 'params', 'share', `eval loss after${seeds.length > 1 ? ' (± sd)' : ''}`, 'reduction', 'time'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => '  ' + cells.map((c, i) => (i === 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  out.push(line(head));
  for (const row of rows) out.push(line(row));
  out.push('');
  const c = r.correlation;
  out.push(`  Spearman (PAGE share vs loss reduction, ${c.singles} single placements): ${c.spearman === null ? 'undefined' : c.spearman.toFixed(3)}` +
    (c.dominantRank !== undefined ? `; the dominant module ranks ${c.dominantRank} of ${c.singles}` : ''));
  for (const f of r.findings) out.push(`  - ${f}`);
  out.push('');
  out.push(`  adapters (PEFT) in ${r.dir}/adapters/<placement>/seed-<seed>/; the table in ${r.dir}/check.json`);
  return out.join('\n');
}

/** N reports of one model: the dominant of each, and the pairwise Spearman matrix. */
export function formatCompare(r: CompareResult): string {
  const out: string[] = [`Comparing ${r.reports.length} PAGE reports of one model (${r.modules} modules)`, ''];
  const names = r.reports.map((_, i) => `R${i + 1}`);
  for (const [i, x] of r.reports.entries()) {
    out.push(`  ${names[i]}  ${x.dataset}`);
    out.push(`      dominant ${x.dominant.name} (layer ${x.dominant.layer} · ${x.dominant.kind}), share ${fmtPct(x.dominant.share)}, ` +
      `bootstrap ${fmtPct(x.dominant.stability)}, ${x.samples} records; report ${x.file}`);
  }
  out.push('');
  out.push('  Spearman rank correlation of the module orderings:');
  out.push('       ' + names.map((n) => n.padStart(7)).join(''));
  for (const [i, row] of r.spearman.entries()) out.push(`  ${names[i].padEnd(5)}` + row.map((v) => v.toFixed(3).padStart(7)).join(''));
  out.push('');
  out.push(`  dominant module: ${r.sameDominant ? 'the same in every report' : 'differs'}; dominant layer: ${r.sameDominantLayer ? 'agrees' : 'differs'}`);
  for (const f of r.findings) out.push(`  - ${f}`);
  return out.join('\n');
}
