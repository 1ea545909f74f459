// Security inside VS Code (issue #17): Workspace Trust in both modes, and the heatmap webview's messages treated as
// untrusted. Restricted Mode is played through ctx.isTrusted (the e2e driver runs code-server with trust disabled, so
// VS Code itself never enters it); the extension's own checks are what is tested. The workspace is the fixture one
// (test/e2e/run.mjs): models `tiny` and `fresh`, datasets in data/.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ModelsParams, ModelsResult, ProbeReport } from '../../src/protocol/messages';
import type { Ctx } from '../../src/host/ctx';
import { readSettings, RESTRICTED_SETTINGS } from '../../src/host/config';
import { ModelsView, type ModelsNode } from '../../src/host/modelsView';

function ctx(): Ctx {
  return vscode.extensions.getExtension('domlora.domlora')!.exports as Ctx;
}

const ws = () => vscode.workspace.workspaceFolders![0]!.uri.fsPath;
const tiny = () => path.join(ws(), 'tiny');
const data = () => path.join(ws(), 'data', 'arith.jsonl');
const probe = (dir: string, opts: object) =>
  vscode.commands.executeCommand<{ reportPath: string; report: ProbeReport } | undefined>('domlora.runProbe', vscode.Uri.file(dir), opts);

function noticesSince(t: number) {
  return ctx().notices.filter((n) => n.at >= t);
}

/** Runs `fn` with the extension in Restricted Mode (as VS Code's workspace.isTrusted false would put it). */
async function restricted<T>(fn: () => Promise<T>): Promise<T> {
  const saved = ctx().isTrusted;
  ctx().isTrusted = () => false;
  try {
    return await fn();
  } finally {
    ctx().isTrusted = saved;
  }
}

/** Every file under `dir` (none when it does not exist). */
function files(dir: string): string[] {
  try { return (fs.readdirSync(dir, { recursive: true }) as string[]).sort(); } catch { return []; }
}

describe('Workspace Trust', function () {
  this.timeout(240_000);
  let outside: string;

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    // A model and a dataset outside the workspace, as a hostile setting or a link could name.
    outside = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-outside-'));
    fs.cpSync(tiny(), path.join(outside, 'elsewhere'), { recursive: true, filter: (s) => !s.includes(`${path.sep}.domlora`) });
    fs.copyFileSync(data(), path.join(outside, 'secret.jsonl'));
  });

  after(() => fs.rmSync(outside, { recursive: true, force: true }));

  it('is declared: limited support, with every setting that names a path or a backend restricted', () => {
    const pkg = vscode.extensions.getExtension('domlora.domlora')!.packageJSON as {
      capabilities?: { untrustedWorkspaces?: { supported: unknown; restrictedConfigurations?: string[] } };
      contributes: { configuration: { properties: Record<string, { type: string }> } };
    };
    const trust = pkg.capabilities?.untrustedWorkspaces;
    assert.equal(trust?.supported, 'limited');
    assert.deepEqual([...trust!.restrictedConfigurations!].sort(), RESTRICTED_SETTINGS.map((k) => `domlora.${k}`).sort());
    // Every string setting names a path or a backend; a new one must be added to the list (or this test changed).
    const strings = Object.entries(pkg.contributes.configuration.properties).filter(([, p]) => p.type === 'string').map(([k]) => k).sort();
    assert.deepEqual(strings, [...trust!.restrictedConfigurations!].sort());
  });

  it('trusted, the workspace\'s path settings count; restricted, only the user\'s own', async () => {
    const c = vscode.workspace.getConfiguration('domlora');
    const secret = path.join(outside, 'secret.jsonl');
    await c.update('dataset', secret, vscode.ConfigurationTarget.Workspace);
    await c.update('adapterDirectory', outside, vscode.ConfigurationTarget.Workspace);
    await c.update('backend', 'cpu', vscode.ConfigurationTarget.Workspace);
    try {
      const trusted = readSettings(vscode.Uri.file(tiny()), true);
      assert.equal(trusted.dataset, secret);
      assert.equal(trusted.adapterDirectory, outside);
      assert.equal(trusted.backend, 'cpu');
      const untrusted = readSettings(vscode.Uri.file(tiny()), false);
      assert.equal(untrusted.dataset, undefined);
      assert.equal(untrusted.adapterDirectory, undefined);
      assert.equal(untrusted.backend, 'auto');
      // Numbers are not restricted: the workspace's steps still count.
      assert.equal(untrusted.steps, trusted.steps);
      // The user's own value is theirs, trusted or not.
      await c.update('dataset', data(), vscode.ConfigurationTarget.Global);
      assert.equal(readSettings(vscode.Uri.file(tiny()), false).dataset, data());
    } finally {
      for (const key of ['dataset', 'adapterDirectory', 'backend']) await c.update(key, undefined, vscode.ConfigurationTarget.Workspace);
      await c.update('dataset', undefined, vscode.ConfigurationTarget.Global);
    }
  });

  it('restricted, a model, a dataset or an output outside the workspace is refused, saying why; nothing is read or written', async () => {
    const elsewhere = path.join(outside, 'elsewhere');
    const before = files(outside);
    const storage = ctx().extension.globalStorageUri.fsPath;
    const storageBefore = files(storage);
    const t = Date.now();
    await restricted(async () => {
      assert.equal(await probe(elsewhere, { data: data() }), undefined);
      assert.equal(await probe(tiny(), { data: path.join(outside, 'secret.jsonl') }), undefined);
      // A link inside the workspace that points outside is outside.
      const link = path.join(ws(), 'data', 'linked-secret.jsonl');
      fs.symlinkSync(path.join(outside, 'secret.jsonl'), link);
      try {
        assert.equal(await probe(tiny(), { data: link }), undefined);
      } finally {
        fs.rmSync(link);
      }
      assert.equal(await probe(tiny(), { data: data(), out: path.join(outside, 'report.json') }), undefined);
      assert.equal(await vscode.commands.executeCommand('domlora.train', vscode.Uri.file(tiny()), { data: data(), out: path.join(outside, 'adapter') }), undefined);
    });
    const said = noticesSince(t);
    assert.equal(said.length, 5, said.map((n) => n.message).join('\n'));
    const expected = ['the model folder', 'the dataset', 'the dataset', 'the report', 'the adapter folder'];
    said.forEach((n, i) => {
      assert.equal(n.level, 'warning');
      assert.ok(n.message.startsWith(`DomLoRA: ${expected[i]} `), n.message);
      assert.match(n.message, /is outside this workspace, and in Restricted Mode DomLoRA reads and writes only inside the workspace and its own storage/);
    });
    assert.ok(said[2]!.message.includes('linked-secret.jsonl'));
    assert.deepEqual(files(outside), before);
    assert.deepEqual(files(storage), storageBefore);
    assert.equal(ctx().jobs.running, undefined);
  });

  it('restricted, what lies inside the workspace still works when the user asks; trusted, outside works too', async function () {
    const inWs = await restricted(async () => probe(tiny(), { data: data(), samples: 2 }));
    assert.ok(inWs && fs.existsSync(inWs.reportPath), 'the probe inside the workspace ran in Restricted Mode');
    assert.ok(inWs.reportPath.startsWith(path.join(ws(), '.domlora') + path.sep));
    // Trusted, the same model outside the workspace is probed (its report goes to the extension's storage).
    const out = await probe(path.join(outside, 'elsewhere'), { data: path.join(outside, 'secret.jsonl'), samples: 2 });
    assert.ok(out && fs.existsSync(out.reportPath), 'the trusted probe outside the workspace ran');
    assert.ok(out.reportPath.startsWith(ctx().extension.globalStorageUri.fsPath + path.sep), out.reportPath);
    ctx().panels.get(path.join(outside, 'elsewhere'))?.dispose();
  });

  it('restricted, the Models view reads nothing until asked, then lists the workspace only, not the cache', async () => {
    const asked: ModelsParams[] = [];
    const worker = {
      request: (_m: 'models', params: ModelsParams) => {
        asked.push(params);
        const result: ModelsResult = { models: [], seconds: 0 };
        return { result: Promise.resolve(result) };
      },
    } as unknown as ConstructorParameters<typeof ModelsView>[0];
    let trusted = false;
    const view = new ModelsView(worker, ctx().modelFolders, () => {}, { isTrusted: () => trusted });
    try {
      const first = await view.getChildren();
      assert.equal(first.length, 1);
      const note = view.getTreeItem(first[0] as ModelsNode);
      assert.match(String(note.label), /^Restricted Mode: list this workspace's models$/);
      assert.equal(note.command?.command, 'domlora.refreshModels');
      assert.match(String(note.tooltip), /reads a model's files only when you ask/);
      // The view refreshes on its own (a config.json changed): still nothing read.
      view.refresh();
      await view.getChildren();
      assert.equal(asked.length, 0);
      view.refresh(true);
      await view.getChildren();
      assert.equal(asked.length, 1);
      assert.equal(asked[0]!.noCache, true);
      assert.ok(asked[0]!.folders!.some((f) => path.resolve(f) === tiny()), JSON.stringify(asked[0]));
      // Trusted: listed at once, the cache included.
      trusted = true;
      const trustedView = new ModelsView(worker, ctx().modelFolders, () => {}, { isTrusted: () => trusted });
      await trustedView.getChildren();
      assert.equal(asked.length, 2);
      assert.equal(asked[1]!.noCache, undefined);
      trustedView.dispose();
    } finally {
      view.dispose();
    }
  });
});

describe('messages from the heatmap webview', function () {
  this.timeout(240_000);

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    if (!ctx().models.report(tiny())) assert.ok(await probe(tiny(), { data: data(), samples: 2 }));
  });

  it('malformed and hostile messages are dropped and logged; nothing happens', async () => {
    const panel = ctx().panels.show(tiny());
    const lines: string[] = [];
    const log = ctx().log;
    ctx().log = (line: string) => { lines.push(line); log.call(ctx(), line); };
    const placed = ctx().store.placement(tiny());
    const t = Date.now();
    const hostile: unknown[] = [
      null, 'train', [], { method: 'train' }, { method: 'train', params: { preset: 'domlora; rm -rf ~' } },
      { method: 'train', params: { preset: 'domlora', out: '/tmp/evil' } }, { method: 'runShell', params: { cmd: 'id' } },
      { method: 'reveal', params: { path: '/etc/passwd' } }, { method: 'export', params: { out: '/etc/cron.d/x' } },
      { method: 'place', params: { module: 42 } }, { method: 'place', params: { module: 'a\n$(touch /tmp/pwned)' } },
      JSON.parse('{"method": "cancel", "params": {"__proto__": {"polluted": true}}}'),
    ];
    try {
      for (const m of hostile) await panel.receive(m);
      const dropped = lines.filter((l) => l.startsWith('[panel] dropped a message from the webview: '));
      assert.equal(dropped.length, hostile.length, lines.join('\n'));
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      // Well-formed, but naming what the host does not know: a module not in the report, a run that never was.
      await panel.receive({ method: 'place', params: { module: 'model.layers.99.mlp.evil_proj' } });
      assert.equal(ctx().store.placement(tiny()), placed);
      await panel.receive({ method: 'reveal', params: { what: 'adapter', preset: 'vanilla' } });
      if (!ctx().store.runs(tiny()).vanilla) assert.ok(lines.some((l) => l === '[panel] reveal: this model has no vanilla adapter'), lines.join('\n'));
      assert.equal(ctx().jobs.running, undefined);
      assert.deepEqual(noticesSince(t), []);
      // A module the report holds is placed: the same path works for what the host knows.
      const other = ctx().models.report(tiny())!.report.modules.find((m) => m.name !== placed && m.name !== ctx().models.report(tiny())!.report.dominant.name)!;
      await panel.receive({ method: 'place', params: { module: other.name } });
      assert.equal(ctx().store.placement(tiny()), other.name);
    } finally {
      ctx().log = log;
      await ctx().store.setPlacement(tiny(), placed);
    }
  });
});
