// Extension-host tests that run the real worker on the fixture workspace (made by test/e2e/run.mjs): probe, train,
// cancel, bad input, a crashed worker, and the heatmap panel's security settings.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ProbeReport, TrainResult } from '../../src/protocol/messages';
import { bigData, ctx, data, dataDir, lastNotice, model, until, ws } from './helpers';

function listData(m: string): string[] {
  try { return fs.readdirSync(dataDir(m)).sort(); } catch { return []; }
}

describe('commands with the real worker', function () {
  this.timeout(240_000);

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
  });

  it('explains clearly when the folder is not a model, and writes nothing', async () => {
    const t = Date.now();
    const notes = path.join(ws(), 'notes');
    const r = await vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(notes), { data: data() });
    assert.equal(r, undefined);
    const n = lastNotice(t);
    assert.equal(n?.level, 'error');
    assert.match(n!.message, /"notes" is not a model folder: it has no config\.json/);
    assert.equal(fs.existsSync(dataDir(notes)), false);
    assert.equal(ctx().status.current.kind, 'idle');
  });

  it('runs the PAGE probe, writes the report, opens the heatmap and returns to idle', async () => {
    const seen: string[] = [];
    const sub = ctx().status.onDidChange((s) => { if (s.kind === 'running' && s.progress) seen.push(s.progress.phase); });
    try {
      const r = await vscode.commands.executeCommand<{ reportPath: string; report: ProbeReport }>('domlora.runProbe', vscode.Uri.file(model()), { data: data() });
      assert.ok(r, 'the probe returned a result');
      assert.ok(fs.existsSync(r.reportPath), 'report written');
      assert.equal(path.dirname(r.reportPath), dataDir(model()));
      assert.match(path.basename(r.reportPath), /^probe-\d{8}-\d{6}(-\d+)?\.json$/);
      const onDisk = JSON.parse(fs.readFileSync(r.reportPath, 'utf8')) as ProbeReport;
      assert.equal(onDisk.dominant.name, r.report.dominant.name);
      assert.equal(onDisk.modules.length, onDisk.model.layers * onDisk.kinds.length);
      assert.ok(seen.includes('probe'), `probe progress reached the status bar (saw ${seen.join(',')})`);
      assert.equal(ctx().status.current.kind, 'idle');
      const idle = ctx().status.current as { backend?: { backend: string; detail?: string } };
      assert.equal(idle.backend?.backend, 'wasm');
      assert.match(idle.backend?.detail ?? '', /^wasm, SIMD/, 'the worker\'s ready message carries its description');
      const panel = ctx().panels.get(model());
      assert.ok(panel, 'the heatmap panel is open');
      assert.equal(panel.panel.title, 'PAGE · tiny');
      const st = ctx().models.state(model());
      assert.equal(st.report?.dominant.name, onDisk.dominant.name);
      assert.equal(st.placement, onDisk.dominant.name);
      assert.equal(st.placementIsUserChoice, false);
      assert.equal(listData(model()).filter((f) => f.endsWith('.tmp')).length, 0);
    } finally {
      sub.dispose();
    }
  });

  it('serves the heatmap with a strict CSP and local resources only', async () => {
    const panel = await vscode.commands.executeCommand<vscode.WebviewPanel>('domlora.showHeatmap', vscode.Uri.file(model()));
    assert.ok(panel);
    const html = panel.webview.html;
    const csp = /http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1] ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'nonce-[A-Za-z0-9]+'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    // The only sources are VS Code's own webview origin (webview.cspSource) and the nonce.
    assert.doesNotMatch(csp.split(panel.webview.cspSource).join(''), /https?:|\*/);
    const nonce = /'nonce-([A-Za-z0-9]+)'/.exec(csp)![1];
    for (const tag of html.match(/<script[^>]*>/g) ?? []) assert.ok(tag.includes(`nonce="${nonce}"`), `${tag} carries the nonce`);
    assert.doesNotMatch(html, /<script[^>]*>[^<]+<\/script>/, 'no inline script');
    const roots = (panel.webview.options.localResourceRoots ?? []).map((u) => path.basename(u.fsPath)).sort();
    assert.deepEqual(roots, ['dist', 'media']);
    assert.equal(panel.webview.options.enableScripts, true);
  });

  it('remembers a placement per model and trains DomLoRA there, in PEFT format', async () => {
    const report = ctx().models.report(model())!.report;
    const other = report.modules.find((m) => m.rank === 2)!;
    await ctx().models.place(model(), other.name);
    assert.equal(ctx().models.state(model()).placement, other.name);
    assert.equal(ctx().models.state(model()).placementIsUserChoice, true);
    const points: number[] = [];
    const sub = ctx().status.onDidChange((s) => { if (s.kind === 'running' && s.progress?.phase === 'train') points.push(s.progress.done); });
    let r: TrainResult | undefined;
    try {
      r = await vscode.commands.executeCommand<TrainResult>('domlora.train', vscode.Uri.file(model()), { steps: 6 });
    } finally {
      sub.dispose();
    }
    assert.ok(r, 'training returned a result');
    assert.deepEqual(r.targets, [other.name]);
    assert.ok(points.length >= 2, 'train progress reached the status bar');
    assert.equal(path.dirname(r.adapterDir), dataDir(model()));
    assert.match(path.basename(r.adapterDir), /^adapter-domlora-\d{8}-\d{6}/);
    const cfg = JSON.parse(fs.readFileSync(path.join(r.adapterDir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.ok(JSON.stringify(cfg.target_modules).includes(other.kind) || JSON.stringify(cfg).includes(other.name));
    assert.ok(fs.existsSync(path.join(r.adapterDir, 'adapter_model.safetensors')));
    const run = ctx().models.state(model()).runs.domlora!;
    assert.equal(run.status, 'done');
    assert.equal(run.result?.trainableParams, other.adapterParams);
    await ctx().models.place(model(), undefined);
    assert.equal(ctx().models.state(model()).placementIsUserChoice, false);
  });

  it('exports the trained adapter as a PEFT LoraConfig and as a merged model', async () => {
    const dir = path.join(ws(), 'exports');
    const py = path.join(dir, 'lora_config.py');
    const r = await vscode.commands.executeCommand<{ out: string }>('domlora.export', vscode.Uri.file(model()), { format: 'peft-config', out: py });
    assert.ok(r, 'export returned a result');
    assert.match(fs.readFileSync(py, 'utf8'), /LoraConfig/);
    const merged = path.join(dir, 'merged');
    await vscode.commands.executeCommand('domlora.export', vscode.Uri.file(model()), { format: 'merged', out: merged });
    assert.ok(fs.existsSync(path.join(merged, 'config.json')), 'merged model folder has config.json');
    assert.equal(ctx().status.current.kind, 'idle');
  });

  it('refuses to train DomLoRA on a model with no probe, clearly', async () => {
    const t = Date.now();
    const r = await vscode.commands.executeCommand('domlora.train', vscode.Uri.file(path.join(ws(), 'fresh')), { data: data() });
    assert.equal(r, undefined);
    assert.match(lastNotice(t)?.message ?? '', /no PAGE probe of fresh yet/);
    assert.equal(fs.existsSync(dataDir(path.join(ws(), 'fresh'))), false);
  });

  it('reports a malformed dataset clearly and writes no report', async () => {
    const before = listData(model());
    const t = Date.now();
    const r = await vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(model()), { data: path.join(ws(), 'data', 'bad.jsonl') });
    assert.equal(r, undefined);
    const n = lastNotice(t);
    assert.equal(n?.level, 'error');
    assert.match(n!.message, /bad\.jsonl/);
    assert.deepEqual(listData(model()), before);
    assert.equal(ctx().status.current.kind, 'idle');
  });

  it('cancels a running probe: idle again, nothing written', async () => {
    const before = listData(model());
    const t = Date.now();
    const pending = vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(model()), { data: bigData(), samples: 1000 });
    await until(() => ctx().status.current.kind === 'running' && (ctx().status.current as { progress?: { phase: string } }).progress?.phase === 'probe', 60_000, 'the probe to start');
    assert.equal(await vscode.commands.executeCommand('domlora.cancel'), true);
    assert.equal(await pending, undefined);
    assert.equal(ctx().status.current.kind, 'idle');
    assert.match(lastNotice(t)?.message ?? '', /cancelled\. Nothing was written/);
    assert.deepEqual(listData(model()), before);
  });

  it('turns a worker crash into a clear error, and the next job gets a fresh worker', async () => {
    const t = Date.now();
    const pending = vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(model()), { data: bigData(), samples: 1000 });
    await until(() => ctx().status.current.kind === 'running' && !!ctx().worker.pid && (ctx().status.current as { progress?: unknown }).progress !== undefined, 60_000, 'the probe to start');
    const pid = ctx().worker.pid!;
    process.kill(pid, 'SIGTERM');
    assert.equal(await pending, undefined);
    const n = lastNotice(t);
    assert.equal(n?.level, 'error');
    assert.match(n!.message, /worker stopped unexpectedly/);
    const s = ctx().status.current;
    assert.equal(s.kind, 'idle');
    const r = await vscode.commands.executeCommand<{ reportPath: string }>('domlora.runProbe', vscode.Uri.file(model()), { data: data(), samples: 2 });
    assert.ok(r && fs.existsSync(r.reportPath), 'the next probe ran');
    assert.notEqual(ctx().worker.pid, pid, 'in a fresh worker');
  });
});

describe('the domlora.adapterDirectory setting', function () {
  this.timeout(240_000);
  const c = () => vscode.workspace.getConfiguration('domlora');
  let saved: unknown;
  /** Trains a DomLoRA adapter of tiny at one module, whatever the probe tests left placed. */
  const trainTiny = (opts: Record<string, unknown> = {}) => vscode.commands.executeCommand<TrainResult>('domlora.train',
    vscode.Uri.file(model()), { data: data(), steps: 3, module: 'model.layers.0.mlp.down_proj', ...opts });
  const adaptersIn = (dir: string) => { try { return fs.readdirSync(dir).sort(); } catch { return []; } };

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    saved = c().inspect('adapterDirectory')?.workspaceValue;
  });

  afterEach(async () => {
    await c().update('adapterDirectory', saved, vscode.ConfigurationTarget.Workspace);
  });

  it('puts trained adapters in the folder it names, relative to the workspace, as <model>-<preset>-<timestamp>', async () => {
    await c().update('adapterDirectory', 'trained/adapters', vscode.ConfigurationTarget.Workspace);
    const folder = path.join(ws(), 'trained', 'adapters');
    const oldPlace = listData(model());
    const t = Date.now();
    const r = await trainTiny();
    assert.ok(r, 'training returned a result');
    assert.equal(path.dirname(r.adapterDir), folder);
    assert.match(path.basename(r.adapterDir), /^tiny-domlora-\d{8}-\d{6}(-\d+)?$/);
    assert.deepEqual(adaptersIn(folder), [path.basename(r.adapterDir)]);
    const cfg = JSON.parse(fs.readFileSync(path.join(r.adapterDir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.ok(fs.statSync(path.join(r.adapterDir, 'adapter_model.safetensors')).size > 0, 'adapter_model.safetensors written');
    assert.deepEqual(listData(model()), oldPlace, 'nothing new in .domlora');
    assert.match(lastNotice(t)?.message ?? '', /DomLoRA: trained DomLoRA at layer 0 · down_proj/);
    assert.equal(ctx().models.state(model()).runs.domlora?.result?.adapterDir, r.adapterDir);
    // Another run gets a folder of its own, even within the same second (freshPath).
    const again = await trainTiny({ steps: 1 });
    assert.ok(again);
    assert.notEqual(again.adapterDir, r.adapterDir);
    assert.equal(path.dirname(again.adapterDir), folder);
    assert.equal(adaptersIn(folder).length, 2);
  });

  it('lets an explicit out win over the setting', async () => {
    await c().update('adapterDirectory', 'trained/adapters', vscode.ConfigurationTarget.Workspace);
    const folder = path.join(ws(), 'trained', 'adapters');
    const inFolder = adaptersIn(folder);
    const out = path.join(ws(), 'explicit-out');
    const r = await trainTiny({ steps: 1, out });
    assert.ok(r);
    assert.equal(r.adapterDir, out);
    assert.ok(fs.existsSync(path.join(out, 'adapter_config.json')));
    assert.deepEqual(adaptersIn(folder), inFolder);
  });

  it('refuses clearly, before training, when a file is in the way, and writes nothing', async () => {
    const runBefore = ctx().models.state(model()).runs.domlora;
    const topBefore = adaptersIn(ws());
    const dataBefore = listData(model());
    const states: string[] = [];
    const sub = ctx().status.onDidChange((s) => states.push(s.kind));
    try {
      for (const [setting, why] of [
        ['data/arith.jsonl', /a file exists at that path/],
        ['data/arith.jsonl/adapters', /arith\.jsonl is a file, not a folder/],
      ] as const) {
        await c().update('adapterDirectory', setting, vscode.ConfigurationTarget.Workspace);
        const t = Date.now();
        const r = await trainTiny();
        assert.equal(r, undefined);
        const n = lastNotice(t);
        assert.equal(n?.level, 'error');
        assert.ok(n!.message.includes('domlora.adapterDirectory'), `names the setting: ${n!.message}`);
        assert.ok(n!.message.includes(path.join(ws(), setting)), `names the path: ${n!.message}`);
        assert.match(n!.message, why);
      }
    } finally {
      sub.dispose();
    }
    assert.ok(!states.includes('running'), `no job started (status went ${states.join(', ')})`);
    assert.equal(ctx().status.current.kind, 'idle');
    assert.ok(fs.statSync(path.join(ws(), 'data', 'arith.jsonl')).isFile());
    assert.deepEqual(adaptersIn(ws()), topBefore);
    assert.deepEqual(listData(model()), dataBefore);
    assert.deepEqual(ctx().models.state(model()).runs.domlora, runBefore, 'no run started in the panel');
  });

  it('keeps adapters in .domlora/<model> when it is empty', async () => {
    await c().update('adapterDirectory', '', vscode.ConfigurationTarget.Workspace);
    const r = await trainTiny({ steps: 1 });
    assert.ok(r, 'training returned a result');
    assert.equal(path.dirname(r.adapterDir), dataDir(model()));
    assert.match(path.basename(r.adapterDir), /^adapter-domlora-\d{8}-\d{6}(-\d+)?$/);
    assert.ok(fs.existsSync(path.join(r.adapterDir, 'adapter_config.json')));
    assert.ok(fs.existsSync(path.join(r.adapterDir, 'adapter_model.safetensors')));
  });

  it('says the data in the output channel, and a file of mixed record shapes in a notification', async () => {
    const mixed = path.join(ws(), 'data', 'mixed.jsonl');
    fs.writeFileSync(mixed, [{ instruction: 'Add 2 and 3.', output: '5' }, { text: 'Once upon a time.' }, { instruction: 'Add 1 and 1.', output: '2' }]
      .map((x) => JSON.stringify(x)).join('\n') + '\n');
    const t = Date.now();
    const r = await vscode.commands.executeCommand<{ report: ProbeReport }>('domlora.runProbe', vscode.Uri.file(model()), { data: mixed });
    assert.ok(r, 'the probe ran');
    assert.equal(r.report.data?.used, 3);
    const warning = ctx().notices.find((n) => n.at >= t && n.level === 'warning' && /mixes record shapes/.test(n.message));
    assert.ok(warning, `a notification warns about the mixed shapes: ${JSON.stringify(ctx().notices.filter((n) => n.at >= t))}`);
    assert.match(warning.message, /mixed\.jsonl: the file mixes record shapes: 2 alpaca/);
    const log = process.env.DOMLORA_LOG_FILE;
    assert.ok(log, 'the e2e driver keeps the output channel in DOMLORA_LOG_FILE');
    assert.match(fs.readFileSync(log, 'utf8'), /\[info\] data: .*mixed\.jsonl — 3 records, mixed shapes \(2 alpaca, 1 text\), \d+ supervised tokens of \d+/);
  });
});
