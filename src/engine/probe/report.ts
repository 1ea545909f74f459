// The probe's report: per module both PAGE values, its share of the total, its rank and its adapter's cost, the
// dominant module and how sure that pick is (bootstrap over the records).
import * as path from 'node:path';
import type { ProbeParams, ProbeReport, ProbeModule } from '../../protocol/messages';
import type { ModuleSpec } from '../hf/modules';
import { adapterParams } from '../model/lora';
import { Rng } from '../runtime/rng';
import { DEFAULTS } from '../../protocol/params';

/** The probe's defaults: the protocol's (one source for the CLI, the extension and the demo), and its own. */
export const PROBE_DEFAULTS = {
  samples: DEFAULTS.samples, seqLen: DEFAULTS.seqLen, rank: DEFAULTS.rank, alpha: DEFAULTS.alpha, seed: DEFAULTS.seed,
  bootstrap: DEFAULTS.bootstrap, stabilityThreshold: 0.95,
};

/** Column means of per-record values. */
function mean(rows: ArrayLike<number>[], m: number): number[] {
  const out = new Array(m).fill(0);
  for (const r of rows) for (let j = 0; j < m; j++) out[j] += r[j];
  return out.map((v) => v / Math.max(1, rows.length));
}

export interface Bootstrap { winner: number; stability: number; wins: number[] }

/** Over `B` resamples (with replacement) of the N records, how often each module has the largest mean expected PAGE. */
export function bootstrapWins(perRecord: ArrayLike<number>[], B: number, seed: number): Bootstrap {
  const N = perRecord.length;
  const M = perRecord[0]?.length ?? 0;
  const wins = new Array(M).fill(0);
  const rng = new Rng(seed ^ 0x5bd1e995);
  const sums = new Float64Array(M);
  for (let b = 0; b < B; b++) {
    sums.fill(0);
    for (let k = 0; k < N; k++) {
      const row = perRecord[rng.nextInt(N)];
      for (let j = 0; j < M; j++) sums[j] += row[j];
    }
    let best = 0;
    for (let j = 1; j < M; j++) if (sums[j] > sums[best]) best = j;
    wins[best]++;
  }
  const full = mean(perRecord, M);
  let winner = 0;
  for (let j = 1; j < M; j++) if (full[j] > full[winner]) winner = j;
  return { winner, stability: wins[winner] / B, wins: wins.map((w) => w / B) };
}

export interface BuildArgs {
  p: typeof PROBE_DEFAULTS & ProbeParams & { sampling: 'first' | 'random' };
  modules: ModuleSpec[]; sampled: Float64Array[]; expected: Float64Array[];
  recInfo: { index: number; line: number; tokens: number; loss: number }[];
  ds: { file: string; sha256: string; format: string }; skipped: number;
  model: ProbeReport['model']; kinds: string[]; backend: ProbeReport['config']['backend']; backendDevice?: string;
  timings: ProbeReport['timings'];
}

export function buildReport(a: BuildArgs): ProbeReport {
  const M = a.modules.length;
  const pageSampled = mean(a.sampled, M);
  const pageExpected = mean(a.expected, M);
  const total = pageExpected.reduce((x, y) => x + y, 0);
  const order = pageExpected.map((v, i) => [v, i] as const).sort((x, y) => y[0] - x[0]).map(([, i]) => i);
  const rankOf = new Array(M);
  order.forEach((i, r) => { rankOf[i] = r + 1; });
  const modules: ProbeModule[] = a.modules.map((m, i) => ({
    name: m.name, layer: m.layer, kind: m.kind, dIn: m.dIn, dOut: m.dOut, adapterParams: adapterParams(m, a.p.rank),
    pageSampled: pageSampled[i], pageExpected: pageExpected[i], share: total > 0 ? pageExpected[i] / total : 0, rank: rankOf[i],
  }));
  const bs = bootstrapWins(a.expected, a.p.bootstrap, a.p.seed);
  const dom = modules[order[0]];
  const ru = modules[order[1] ?? order[0]];
  const top = order.slice(0, 5);
  return {
    tool: { name: 'domlora', version: typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev' },
    createdAt: new Date().toISOString(),
    model: a.model,
    kinds: a.kinds,
    config: {
      samples: a.recInfo.length, requestedSamples: a.p.samples, sampling: a.p.sampling, skipped: a.skipped, seqLen: a.p.seqLen,
      rank: a.p.rank, alpha: a.p.alpha, seed: a.p.seed, backend: a.backend, ...(a.backendDevice ? { backendDevice: a.backendDevice } : {}),
      dataset: path.resolve(a.ds.file),
      datasetSha256: a.ds.sha256, datasetFormat: a.ds.format, bootstrap: a.p.bootstrap, untilStable: Boolean(a.p.untilStable),
    },
    meanLoss: a.recInfo.reduce((x, r) => x + r.loss, 0) / a.recInfo.length,
    tokens: a.recInfo.reduce((x, r) => x + r.tokens, 0),
    modules,
    dominant: {
      name: dom.name, layer: dom.layer, kind: dom.kind, share: dom.share, stability: bs.stability,
      runnerUp: { name: ru.name, share: ru.share, wins: bs.wins[order[1] ?? order[0]] },
    },
    records: a.recInfo.map((r, n) => ({ ...r, top: top.map((i) => ({ name: a.modules[i].name, pageExpected: a.expected[n][i] })) })),
    perRecordExpected: a.expected.map((row) => Array.from(row)),
    timings: a.timings,
  };
}
