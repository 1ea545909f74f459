// The placement check's and the comparison's arithmetic on crafted inputs, where every answer is known by hand:
// ranks with ties, Spearman's coefficient, the spread over seeds, the placements drawn, the ranking, the findings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CheckRun, ProbeModule, ProbeReport } from '../../src/protocol/messages';
import { averageRanks, insideSpread, pearson, spearman, spreadOf } from '../../src/engine/runtime/stats';
import { compareReports, compareReportSet } from '../../src/engine/probe/compare';
import { parsePlacements, resolvePlacements, CHECK_PLACEMENTS } from '../../src/engine/check/placements';
import { findings, summarise, type PlacementRuns } from '../../src/engine/check/summary';
import { DomLoraError } from '../../src/engine/runtime/errors';

const close = (a: number | null, b: number, eps = 1e-12) => assert.ok(a !== null && Math.abs(a - b) <= eps, `${a} vs ${b}`);

test('ranks: 1 for the largest, ties share the mean of their ranks', () => {
  assert.deepEqual(averageRanks([10, 30, 20]), [3, 1, 2]);
  assert.deepEqual(averageRanks([10, 30, 20], false), [1, 3, 2]);
  assert.deepEqual(averageRanks([1, 2, 2, 3]), [4, 2.5, 2.5, 1]);
  assert.deepEqual(averageRanks([5, 5, 5]), [2, 2, 2]);
});

test('Spearman: the closed form without ties, the tie-corrected value with them, null when a series is constant', () => {
  // d = (0, 1, -1, 0): 1 - 6 * 2 / (4 * 15) = 0.8.
  close(spearman([10, 20, 30, 40], [1, 3, 2, 4]), 0.8);
  close(spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]), -1);
  close(spearman([1, 2, 3], [10, 100, 1000]), 1, 0);
  // scipy.stats.spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9486832980505138 (= 4.5 / sqrt(22.5)).
  close(spearman([1, 2, 2, 3], [1, 2, 3, 4]), 0.9486832980505138);
  assert.equal(spearman([1, 1, 1], [1, 2, 3]), null);
  assert.equal(spearman([1], [2]), null);
  assert.equal(pearson([0, 1], [0, 1]), 1);
  assert.throws(() => spearman([1, 2], [1]), RangeError);
});

test('spread over seeds: mean, sample sd from two values on, and when two spreads overlap', () => {
  const a = spreadOf([1, 2, 3]);
  assert.equal(a.mean, 2);
  close(a.sd!, 1);
  assert.deepEqual([a.min, a.max, a.n], [1, 3, 3]);
  assert.equal(spreadOf([4]).sd, undefined);
  assert.equal(insideSpread(spreadOf([4]), a), undefined, 'one value: nothing can be said');
  assert.equal(insideSpread(spreadOf([1, 2, 3]), spreadOf([3, 4, 5])), true, '2 ± 1 and 4 ± 1 touch');
  assert.equal(insideSpread(spreadOf([1, 2, 3]), spreadOf([4, 5, 6])), false, '2 ± 1 and 5 ± 1 do not');
});

/** A report of a 3-layer model with q/down kinds, shares as given (in module order), ranks from them. */
function report(shares: number[], kinds = ['q_proj', 'down_proj']): ProbeReport {
  const modules: ProbeModule[] = shares.map((share, i) => {
    const layer = Math.floor(i / kinds.length), kind = kinds[i % kinds.length];
    return { name: `model.layers.${layer}.${kind === 'q_proj' ? 'self_attn' : 'mlp'}.${kind}`, layer, kind, dIn: 8, dOut: 8, adapterParams: 16,
      pageSampled: share, pageExpected: share, share, rank: 0 };
  });
  [...modules].sort((a, b) => b.share - a.share).forEach((m, r) => { m.rank = r + 1; });
  const dom = modules.find((m) => m.rank === 1)!, ru = modules.find((m) => m.rank === 2)!;
  return {
    tool: { name: 'domlora', version: 'test' }, createdAt: '', kinds,
    model: { path: '/m', modelType: 'llama', layers: shares.length / kinds.length, hiddenSize: 8, intermediateSize: 8, heads: 1, kvHeads: 1, headDim: 8, vocabSize: 8, parameters: 1, tiedEmbeddings: true },
    config: { samples: 4, requestedSamples: 4, sampling: 'first', skipped: 0, seqLen: 8, rank: 1, alpha: 1, seed: 0, backend: 'wasm', dataset: `/d/${shares.join('-')}.jsonl`,
      datasetSha256: '', datasetFormat: 'alpaca', bootstrap: 10, untilStable: false },
    meanLoss: 1, tokens: 1, modules, records: [], perRecordExpected: [], timings: { loadSeconds: 0, probeSeconds: 0 },
    dominant: { name: dom.name, layer: dom.layer, kind: dom.kind, share: dom.share, stability: 1, runnerUp: { name: ru.name, share: ru.share, wins: 0 } },
  };
}

test('compare: N reports pairwise, the same numbers as the two-report comparison, the dominant layer agreement', () => {
  const a = report([0.05, 0.4, 0.1, 0.2, 0.15, 0.1]);      // dominant layer 0 down_proj
  const b = report([0.05, 0.35, 0.15, 0.25, 0.1, 0.1]);     // same dominant
  const c = report([0.3, 0.1, 0.2, 0.1, 0.25, 0.05]);       // dominant layer 0 q_proj: same layer, another kind
  const r = compareReportSet([{ file: 'a', report: a }, { file: 'b', report: b }, { file: 'c', report: c }]);
  assert.equal(r.reports.length, 3);
  for (let i = 0; i < 3; i++) {
    assert.equal(r.spearman[i][i], 1);
    for (let j = 0; j < 3; j++) assert.equal(r.spearman[i][j], r.spearman[j][i]);
  }
  // a's ranks by share: 6 1 4 2 3 5 (0.1 vs 0.1 broken by order); b's: 6 1 3 2 4 5 -> d^2 = 2, rho = 1 - 12/210.
  close(r.spearman[0][1], 1 - (6 * 2) / (6 * 35));
  const two = compareReports(a, b);
  assert.equal(two.spearman, r.spearman[0][1]);
  assert.equal(two.sameDominant, true);
  assert.equal(r.sameDominant, false);
  assert.equal(r.sameDominantLayer, true);
  assert.match(r.findings[0], /dominant layer agrees: every report puts it at layer 0, though the module kind differs \(down_proj, q_proj\)/);
  const d = report([0.05, 0.1, 0.1, 0.2, 0.15, 0.4]);       // dominant layer 2
  const r2 = compareReportSet([{ file: 'a', report: a }, { file: 'd', report: d }]);
  assert.equal(r2.sameDominantLayer, false);
  assert.match(r2.findings[0], /differs between the reports: layer 0 \(.*\); layer 2 \(.*\)/);
  assert.throws(() => compareReportSet([{ file: 'a', report: a }]), /at least two/);
  const other = report([0.5, 0.5]);
  assert.throws(() => compareReportSet([{ file: 'a', report: a }, { file: 'x', report: other }]), (e: unknown) => e instanceof DomLoraError && /different modules/.test(e.message));
});

test('placements: the words, module names and random:K are read and refused clearly; resolved against the report', () => {
  const rep = report([0.05, 0.4, 0.1, 0.2, 0.15, 0.1, 0.02, 0.3]); // 4 layers
  const mods = rep.modules.map((m) => ({ name: m.name, layer: m.layer, kind: m.kind, dIn: 8, dOut: 8 }));
  const bad = (list: string[], re: RegExp) => assert.throws(() => parsePlacements(list, mods), (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && re.test(e.message));
  bad(['dominant,best'], /"best" is neither/);
  bad(['model.layers.9.mlp.down_proj'], /neither .* \(e\.g\. model\.layers\.0\.mlp\.down_proj/);
  bad(['dominant', 'dominant'], /names "dominant" twice/);
  bad(['random:0'], /1 to 100 random modules/);
  bad(['random:1,random:2'], /random:K twice/);
  assert.deepEqual(parsePlacements(undefined, mods).map((p) => p.spec), [...CHECK_PLACEMENTS]);
  const resolved = resolvePlacements(parsePlacements(undefined, mods), mods, rep, 7);
  const ids = resolved.map((p) => p.id);
  assert.deepEqual(ids, ['dominant', 'runner-up', 'lowest', 'random-1', 'random-2', 'vanilla']);
  assert.deepEqual(resolved[0].modules, ['model.layers.0.mlp.down_proj']);
  assert.deepEqual(resolved[1].modules, ['model.layers.3.mlp.down_proj']);
  assert.deepEqual(resolved[2].modules, ['model.layers.3.self_attn.q_proj']);
  // Random modules: the dominant's kind, never one already placed; only layers 1 and 2 are left.
  assert.deepEqual(resolved.slice(3, 5).map((p) => p.modules[0]).sort(), ['model.layers.1.mlp.down_proj', 'model.layers.2.mlp.down_proj']);
  assert.equal(resolved[5].modules.length, 8);
  // The same seed draws the same; one module left when K asks for more: a warning, not a failure.
  const warnings: string[] = [];
  const one = resolvePlacements(parsePlacements(['dominant', 'runner-up', 'model.layers.1.mlp.down_proj', 'random:3'], mods), mods, rep, 1, (m) => warnings.push(m));
  assert.deepEqual(one.map((p) => p.modules[0]), ['model.layers.0.mlp.down_proj', 'model.layers.3.mlp.down_proj', 'model.layers.1.mlp.down_proj', 'model.layers.2.mlp.down_proj']);
  assert.match(warnings[0], /only 1 down_proj module/);
  assert.throws(() => resolvePlacements(parsePlacements(['dominant', 'model.layers.0.mlp.down_proj'], mods), mods, rep, 0), /are the same module/);
  const all = resolvePlacements(parsePlacements(['random:9'], mods), mods, rep, 3);
  assert.equal(all.length, 4, 'every down_proj module, none twice');
  const again = resolvePlacements(parsePlacements(['random:2'], mods), mods, rep, 3);
  assert.deepEqual(again.map((p) => p.modules[0]), resolvePlacements(parsePlacements(['random:2'], mods), mods, rep, 3).map((p) => p.modules[0]));
});

/** A placement's runs from its reductions, one per seed (the loss before is 5 for all). */
function item(id: string, kind: PlacementRuns['kind'], share: number, reductions: number[], params = 16): PlacementRuns {
  const runs: CheckRun[] = reductions.map((r, seed) => ({ seed, evalLossBefore: 5, evalLossAfter: 5 - r, reduction: r, seconds: 1, adapterDir: `/c/${id}/seed-${seed}` }));
  return { id, spec: id, kind, label: id, modules: [id], trainableParams: params, share, runs };
}

test('summary: ranks by mean reduction, the dominant\'s rank, Spearman over single placements only', () => {
  const { placements, correlation } = summarise([
    item('dominant', 'dominant', 0.4, [0.5, 0.52, 0.48]), item('runner-up', 'runner-up', 0.3, [0.3, 0.32, 0.28]),
    item('lowest', 'lowest', 0.01, [0.1, 0.1, 0.1]), item('random-1', 'random', 0.1, [0.2, 0.25, 0.15]),
    item('vanilla', 'vanilla', 1, [0.9, 0.91, 0.89], 1000),
  ]);
  assert.deepEqual(placements.map((p) => p.reductionRank), [1, 2, 4, 3, undefined]);
  assert.equal(correlation.singles, 4);
  assert.equal(correlation.dominantRank, 1);
  close(correlation.spearman, 1, 1e-12); // shares and reductions in the same order
  close(placements[0].reduction.mean, 0.5);
  close(placements[0].reduction.sd!, 0.02, 1e-12);
  assert.equal(placements[0].evalLossBefore, 5);
  assert.equal(placements[4].seconds, 3);
  const f = findings(placements, correlation, 3);
  assert.match(f[0], /ranks 1 of 4 single placements .* next runner-up, 0\.3000\)\. The difference from runner-up \(\+0\.2000\) is larger than the spread over 3 seeds/);
  assert.ok(f.some((s) => /Vanilla LoRA \(1,000 parameters\) lowered the loss by 0\.9000; the dominant module reached 55\.6% of that with 1\.60% of its parameters/.test(s)), f.join('\n'));
  assert.ok(f.some((s) => /Spearman's rank correlation .* over 4 single placements: 1\.000\. With 4 placements, a rank correlation is weak evidence/.test(s)));
  assert.ok(!f.some((s) => /One seed/.test(s)));
});

test('summary: differences inside the spread are said to be so; one seed says no spread was measured', () => {
  const close2 = [item('dominant', 'dominant', 0.4, [0.30, 0.40, 0.35]), item('runner-up', 'runner-up', 0.3, [0.38, 0.32, 0.36]),
    item('lowest', 'lowest', 0.01, [0.33, 0.37, 0.31])];
  const s = summarise(close2);
  assert.equal(s.correlation.dominantRank, 2, 'the runner-up has the larger mean (0.3533 vs 0.35)');
  const f = findings(s.placements, s.correlation, 3);
  assert.match(f[0], /ranks 2 of 3 .*: runner-up lowered the held-out loss most .* is inside the spread over 3 seeds .* cannot tell the two placements apart/);
  assert.ok(f.some((x) => /Every single placement is inside the others' spread over 3 seeds/.test(x)), f.join('\n'));
  const single = summarise([item('dominant', 'dominant', 0.4, [0.3]), item('lowest', 'lowest', 0.1, [0.2]), item('random-1', 'random', 0.2, [0.25])]);
  const g = findings(single.placements, single.correlation, 1);
  assert.ok(g.some((x) => /One seed per placement: no spread was measured/.test(x)));
  assert.ok(!g.some((x) => /inside the spread|larger than the spread/.test(x)), 'nothing is said about a spread that was not measured');
  // Training that did not lower the loss: said so rather than a meaningless percentage.
  const flat = summarise([item('dominant', 'dominant', 0.4, [-0.01]), item('vanilla', 'vanilla', 1, [-0.02], 100)]);
  assert.ok(findings(flat.placements, flat.correlation, 1).some((x) => /did not lower the loss/.test(x)));
  assert.equal(flat.correlation.spearman, null, 'fewer than 3 single placements: no correlation');
});
