// Extension-host tests of the placement check and of Compare Datasets, with the real worker on the fixture workspace
// (made by test/e2e/run.mjs): the check from the command, its view in the panel and its kept adapters; a cancel in
// the middle of a placement and the resume; reports compared pairwise; and the pieces that need no worker (the
// progress of a check in the status bar and the notification, the headline, the comparison's grids).
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { CheckResult, CompareResult, Progress, ProbeReport } from '../../src/protocol/messages';
import { checkHeadline, checkProgressOnDisk, comparisonView } from '../../src/host/commands';
import { jobFraction } from '../../src/host/jobs';
import { renderStatus } from '../../src/host/status';
import { bigData, ctx, data, dataDir, lastNotice, model, until, ws } from './helpers';

const codeData = () => path.join(ws(), 'data', 'code.jsonl');

const progress = (over: Partial<Progress> = {}): Progress => ({ phase: 'train', done: 0, total: 10, ...over } as Progress);
const placementOf = (index: number, count: number, seedIndex = 1, seeds = 1) =>
  ({ index, count, id: 'dominant', label: 'dominant (layer 0 · q_proj)', seed: seedIndex - 1, seedIndex, seeds });

describe('the placement check, without a worker', () => {
  it('moves the notification\'s bar across the whole check, not each run', () => {
    assert.equal(jobFraction('check', progress({ done: 5, total: 10, placement: placementOf(1, 4) })), 5 / 40);
    // Placement 3 of 4 with 3 seeds, its second seed half done: 2 placements x 3 seeds + 1 run + 0.5 of 12 runs.
    assert.equal(jobFraction('check', progress({ done: 5, total: 10, placement: placementOf(3, 4, 2, 3) })), 7.5 / 12);
    // Between runs (its evaluation), the run counts as not yet done; no bar before the first placement starts.
    assert.equal(jobFraction('check', progress({ phase: 'eval', done: 3, total: 4, placement: placementOf(2, 2) })), 0.5);
    assert.equal(jobFraction('check', progress({ phase: 'probe', done: 3, total: 4 })), undefined);
    assert.equal(jobFraction('train', progress({ done: 3, total: 4 })), 0.75);
  });

  it('shows "check k/n" and the seed in the status bar while a check runs', () => {
    const running = (p: Progress) => renderStatus({ kind: 'running', job: 'check', model: 'tiny', startedAt: Date.now(), progress: p }).text;
    assert.match(running(progress({ done: 3, total: 6, placement: placementOf(2, 6) })), /check 2\/6 · train 3\/6/);
    assert.match(running(progress({ done: 3, total: 6, placement: placementOf(2, 6, 3, 3) })), /check 2\/6 seed 3\/3 · train 3\/6/);
    assert.doesNotMatch(running(progress({ done: 3, total: 6, placement: placementOf(2, 6) })), /seed/);
  });

  it('says in one sentence where the dominant ranks, and vanilla\'s reduction beside it', () => {
    const red = (mean: number) => ({ mean, min: mean, max: mean, n: 1 });
    const r = {
      placements: [
        { id: 'dominant', kind: 'dominant', reduction: red(0.1234) }, { id: 'lowest', kind: 'lowest', reduction: red(0.2) },
        { id: 'vanilla', kind: 'vanilla', reduction: red(0.5) },
      ],
      correlation: { spearman: -1, singles: 2, dominantRank: 2 },
    } as unknown as CheckResult;
    assert.equal(checkHeadline(r), 'The dominant module ranks 2 of 2 single placements by loss reduction (0.123); vanilla LoRA 0.500.');
  });

  it('reads a check\'s progress on disk, and nothing from a folder that holds no check', () => {
    const dir = fs.mkdtempSync(path.join(ws(), '.check-state-'));
    try {
      assert.equal(checkProgressOnDisk(dir), undefined);
      fs.writeFileSync(path.join(dir, 'check-state.json'), JSON.stringify({ plan: { placements: [1, 2, 3], seeds: [0, 1] }, finished: { 'a#0': {}, 'b#0': {} } }));
      assert.deepEqual(checkProgressOnDisk(dir), { finished: 2, total: 6 });
      fs.writeFileSync(path.join(dir, 'check-state.json'), '{ not json');
      assert.equal(checkProgressOnDisk(dir), undefined);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the placement check with the real worker', function () {
  this.timeout(300_000);

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    // The check needs a probe of the model on disk; the other suites may have made none, or one in a folder since removed.
    const shown = ctx().models.report(model());
    if (!shown || !fs.existsSync(shown.path)) {
      const r = await vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(model()), { data: data() });
      assert.ok(r, 'the probe for the check ran');
    }
  });

  it('refuses to check a model with no probe, and offers to run one', async () => {
    const t = Date.now();
    const r = await vscode.commands.executeCommand('domlora.checkPlacement', vscode.Uri.file(path.join(ws(), 'fresh')), { seeds: 1 });
    assert.equal(r, undefined);
    const n = lastNotice(t);
    assert.equal(n?.level, 'error');
    assert.match(n!.message, /no PAGE probe of fresh yet, so there is no placement to check/);
    assert.equal(fs.existsSync(dataDir(path.join(ws(), 'fresh'))), false);
    assert.equal(ctx().status.current.kind, 'idle');
  });

  it('refuses clearly when the report shown is no longer on disk, before any work', async () => {
    const shown = ctx().models.report(model())!;
    const gone = path.join(ws(), `.gone-${Date.now()}`, 'report.json');
    ctx().models.setReport(model(), shown.report, gone);
    try {
      const t = Date.now();
      const states: string[] = [];
      const sub = ctx().status.onDidChange((s) => states.push(s.kind));
      try {
        assert.equal(await vscode.commands.executeCommand('domlora.checkPlacement', vscode.Uri.file(model()), { seeds: 1 }), undefined);
      } finally {
        sub.dispose();
      }
      const n = lastNotice(t);
      assert.equal(n?.level, 'error');
      assert.match(n!.message, /the PAGE report of tiny shown in the panel is no longer on disk \(.*report\.json\), so there is no placement to check/);
      assert.ok(!states.includes('running'), 'no job started');
    } finally {
      ctx().models.setReport(model(), shown.report, shown.path);
    }
  });

  it('trains every default placement with one budget, keeps each adapter, and shows the result in the panel', async () => {
    const report = ctx().models.report(model())!.report;
    const seen: string[] = [];
    const sub = ctx().status.onDidChange((s) => { if (s.kind === 'running' && s.progress?.placement) seen.push(renderStatus(s).text); });
    const t = Date.now();
    let r: CheckResult | undefined;
    try {
      r = await vscode.commands.executeCommand<CheckResult>('domlora.checkPlacement', vscode.Uri.file(model()), { seeds: 1, steps: 3 });
    } finally {
      sub.dispose();
    }
    assert.ok(r, 'the check returned a result');
    assert.deepEqual(r.placements.map((p) => p.id), ['dominant', 'runner-up', 'lowest', 'random-1', 'random-2', 'vanilla']);
    assert.equal(path.dirname(r.dir), dataDir(model()));
    assert.match(path.basename(r.dir), /^check-\d{8}-\d{6}(-\d+)?$/);
    assert.equal(r.config.steps, 3, 'the steps asked for');
    assert.equal(r.placements[0]!.modules[0], report.dominant.name, 'the dominant of the report shown');
    for (const p of r.placements) {
      assert.equal(p.runs.length, 1);
      const a = p.runs[0]!.adapterDir;
      assert.ok(a.startsWith(path.join(r.dir, 'adapters') + path.sep), `${a} is in the check's folder`);
      assert.equal(JSON.parse(fs.readFileSync(path.join(a, 'adapter_config.json'), 'utf8')).peft_type, 'LORA');
      assert.ok(fs.statSync(path.join(a, 'adapter_model.safetensors')).size > 0);
      assert.ok(Math.abs(p.reduction.mean - (p.evalLossBefore - p.evalLossAfter.mean)) < 1e-9, `${p.id}: the reduction is before - after`);
    }
    const vanilla = r.placements.find((p) => p.kind === 'vanilla')!;
    assert.equal(vanilla.trainableParams, report.modules.reduce((s, m) => s + m.adapterParams, 0));
    assert.equal(r.placements[0]!.trainableParams, report.modules.find((m) => m.name === report.dominant.name)!.adapterParams);
    // The result on disk is the one returned; the panel shows it, and remembers it.
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(r.dir, 'check.json'), 'utf8')).placements.map((p: { id: string }) => p.id), r.placements.map((p) => p.id));
    const view = ctx().models.state(model()).check;
    assert.equal(view?.status, 'done');
    assert.equal(view?.dir, r.dir);
    assert.equal(view?.result?.placements.length, 6);
    assert.equal(view?.progress, undefined);
    assert.ok(ctx().panels.get(model()), 'the heatmap panel is open');
    // Progress named each placement in turn.
    for (let k = 1; k <= 6; k++) assert.ok(seen.some((s) => s.includes(`check ${k}/6`)), `status showed check ${k}/6 (saw ${[...new Set(seen)].slice(0, 12).join(' | ')})`);
    assert.match(lastNotice(t)?.message ?? '', /placement check of tiny done\. The dominant module ranks [1-5] of 5 single placements by loss reduction \(-?\d\.\d{3}\); vanilla LoRA -?\d\.\d{3}\./);
    assert.equal(ctx().status.current.kind, 'idle');
  });

  it('a check cancelled in the middle of a placement keeps its finished runs, and Resume trains only the rest', async () => {
    const t = Date.now();
    const out = path.join(dataDir(model()), `check-resume-${Date.now()}`);
    let settled = false;
    const pending = Promise.resolve(vscode.commands.executeCommand<CheckResult | undefined>('domlora.checkPlacement', vscode.Uri.file(model()),
      { seeds: 1, steps: 60, placements: ['dominant', 'lowest'], data: bigData(), out })).finally(() => { settled = true; });
    // Cancel once the second placement is training (the first is then finished and saved).
    await until(() => {
      if (settled) throw new Error(`the check ended before it could be cancelled: ${lastNotice(t)?.message}`);
      const s = ctx().status.current;
      return s.kind === 'running' && s.progress?.placement?.index === 2 && s.progress.phase === 'train' && s.progress.done >= 2;
    }, 180_000, 'the second placement to train');
    const firstAdapter = path.join(out, 'adapters', 'dominant', 'seed-0', 'adapter_model.safetensors');
    assert.ok(fs.existsSync(firstAdapter), 'the first placement\'s adapter is saved before the second starts');
    const firstBytes = fs.readFileSync(firstAdapter);
    const firstMtime = fs.statSync(firstAdapter).mtimeMs;
    assert.equal(await vscode.commands.executeCommand('domlora.cancel'), true);
    assert.equal(await pending, undefined);
    assert.equal(ctx().status.current.kind, 'idle');
    assert.match(lastNotice(t)?.message ?? '', /placement check of tiny was cancelled\. The 1 of 2 runs it finished are kept; resume it to train the rest\./);
    const stopped = ctx().models.state(model()).check!;
    assert.equal(stopped.status, 'cancelled');
    assert.equal(stopped.dir, out);
    assert.equal(stopped.finishedRuns, 1);
    assert.equal(stopped.totalRuns, 2);
    assert.equal(fs.existsSync(path.join(out, 'check.json')), false, 'no result for a check cut short');

    // The log file the e2e driver keeps (DOMLORA_LOG_FILE): what the resumed check says about the finished run. The
    // offset is in bytes (the log has '·'), so the file is sliced as bytes.
    const logFile = process.env.DOMLORA_LOG_FILE;
    const logAt = logFile && fs.existsSync(logFile) ? fs.statSync(logFile).size : 0;
    const r = await vscode.commands.executeCommand<CheckResult>('domlora.checkPlacement', vscode.Uri.file(model()), { resume: true });
    assert.ok(r, 'the resumed check returned a result');
    assert.equal(r.dir, out);
    assert.deepEqual(r.placements.map((p) => p.id), ['dominant', 'lowest']);
    assert.equal(r.config.steps, 60, 'the check\'s own budget, not the settings\'');
    assert.equal(fs.statSync(firstAdapter).mtimeMs, firstMtime, 'the finished placement was not trained again');
    assert.deepEqual(fs.readFileSync(firstAdapter), firstBytes);
    assert.ok(fs.existsSync(path.join(out, 'adapters', 'lowest', 'seed-0', 'adapter_model.safetensors')));
    assert.equal(ctx().models.state(model()).check?.status, 'done');
    if (logFile) assert.match(fs.readFileSync(logFile).subarray(logAt).toString('utf8'), /placement 1 of 2: .*finished earlier, kept/, 'the log says the finished run was kept');
    // Nothing is left to resume now.
    const t2 = Date.now();
    assert.equal(await vscode.commands.executeCommand('domlora.checkPlacement', vscode.Uri.file(model()), { resume: true }), undefined);
    assert.match(lastNotice(t2)?.message ?? '', /no stopped placement check of tiny to resume/);
  });
});

describe('Compare Datasets with the real worker', function () {
  this.timeout(240_000);

  let reports: string[] = [];
  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    // Two reports of tiny on different data: arithmetic questions, and code instructions.
    const a = await vscode.commands.executeCommand<{ reportPath: string }>('domlora.runProbe', vscode.Uri.file(model()), { data: data(), samples: 4 });
    const b = await vscode.commands.executeCommand<{ reportPath: string }>('domlora.runProbe', vscode.Uri.file(model()), { data: codeData(), samples: 4 });
    assert.ok(a && b, 'both probes ran');
    reports = [a.reportPath, b.reportPath];
  });

  it('compares reports pairwise and shows each one\'s shares and dominant in the panel', async () => {
    const r = await vscode.commands.executeCommand<CompareResult>('domlora.compareDatasets', vscode.Uri.file(model()), { reports });
    assert.ok(r, 'the comparison returned a result');
    assert.equal(r.reports.length, 2);
    assert.equal(r.spearman.length, 2);
    assert.equal(r.spearman[0]![0], 1);
    assert.equal(r.spearman[0]![1], r.spearman[1]![0], 'the matrix is symmetric');
    assert.ok(r.spearman[0]![1]! >= -1 && r.spearman[0]![1]! <= 1);
    const onDisk = reports.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as ProbeReport);
    assert.deepEqual(r.reports.map((x) => x.dominant.name), onDisk.map((x) => x.dominant.name));
    assert.equal(r.sameDominant, onDisk[0]!.dominant.name === onDisk[1]!.dominant.name);
    const view = ctx().models.state(model()).comparison;
    assert.ok(view, 'the panel shows the comparison');
    assert.deepEqual(view.grids.map((g) => g.label), ['arith.jsonl', 'code.jsonl']);
    assert.equal(view.layers, onDisk[0]!.model.layers);
    assert.deepEqual(view.kinds, onDisk[0]!.kinds);
    for (const [i, g] of view.grids.entries()) {
      assert.equal(g.shares.length, view.layers * view.kinds.length);
      const d = onDisk[i]!.dominant;
      assert.equal(g.shares[d.layer * view.kinds.length + view.kinds.indexOf(d.kind)], d.share, 'the dominant\'s share at its cell');
      assert.equal(Math.max(...g.shares), d.share, 'the dominant has the largest share');
    }
  });

  it('labels two reports of one dataset by their order, so the grids can be told apart', async () => {
    // Two probes of the same data: the same file name, and nothing else to tell their grids apart.
    const again = await vscode.commands.executeCommand<{ reportPath: string }>('domlora.runProbe', vscode.Uri.file(model()), { data: data(), samples: 2 });
    assert.ok(again, 'the probe ran');
    const view = comparisonView(await ctx().worker.request('compare', { reports: [reports[0]!, again.reportPath] }).result);
    assert.deepEqual(view.grids.map((g) => g.label), ['arith.jsonl (1)', 'arith.jsonl (2)']);
  });

  it('asks for two reports or more, and closes the comparison from the panel', async () => {
    const t = Date.now();
    assert.equal(await vscode.commands.executeCommand('domlora.compareDatasets', vscode.Uri.file(model()), { reports: [reports[0]] }), undefined);
    assert.match(lastNotice(t)?.message ?? '', /pick two or more reports to compare \(1 picked\)/);
    ctx().models.setComparison(model(), undefined);
    assert.equal(ctx().models.state(model()).comparison, undefined);
  });

  it('names the file when a report cannot be read', async () => {
    const bad = path.join(ws(), 'data', 'arith.jsonl');
    const t = Date.now();
    assert.equal(await vscode.commands.executeCommand('domlora.compareDatasets', vscode.Uri.file(model()), { reports: [reports[0], bad] }), undefined);
    const n = lastNotice(t);
    assert.equal(n?.level, 'error');
    assert.ok(n!.message.includes('arith.jsonl'), n!.message);
  });
});
