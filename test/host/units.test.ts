// Extension-host tests of the pieces that need no worker: activation, the contributed commands and settings, the
// status bar's rendering and the webview protocol.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { readSettings, SETTING_DEFAULTS } from '../../src/host/config';
import { looksLikeModelConfig } from '../../src/host/modelFolders';
import { ensureFolder } from '../../src/host/store';
import { formatDuration, renderStatus } from '../../src/host/status';
import { looksLikeOutOfMemory } from '../../src/host/worker';
import { PlaceCommand, StateNotification, TrainCommand, TrainPointNotification } from '../../src/protocol/webview';
import { moduleLabel } from '../../src/protocol/messages';
import { colourPosition, labelledRows, legendTicks, moduleGroup, niceTicks, percent } from '../../webview/format';

const EXT_ID = 'domlora.domlora';

describe('activation and manifest', () => {
  it('activates and registers every contributed command', async () => {
    const ext = vscode.extensions.getExtension(EXT_ID);
    assert.ok(ext, 'extension domlora.domlora is installed');
    await ext.activate();
    const all = await vscode.commands.getCommands(true);
    const contributed = (ext.packageJSON.contributes.commands as { command: string }[]).map((c) => c.command);
    for (const c of contributed) assert.ok(all.includes(c), `command ${c} is registered`);
    for (const c of ['domlora.runProbe', 'domlora.train', 'domlora.showHeatmap', 'domlora.cancel']) assert.ok(contributed.includes(c));
  });

  it('offers Run PAGE Probe in the Explorer context menu of model folders only', () => {
    const pkg = vscode.extensions.getExtension(EXT_ID)!.packageJSON;
    const item = (pkg.contributes.menus['explorer/context'] as { command: string; when: string }[]).find((m) => m.command === 'domlora.runProbe');
    assert.ok(item);
    assert.match(item.when, /explorerResourceIsFolder/);
    assert.match(item.when, /resourcePath in domlora\.modelFolders/);
  });

  it('contributes every setting with the defaults the host uses', () => {
    const props = vscode.extensions.getExtension(EXT_ID)!.packageJSON.contributes.configuration.properties as Record<string, { default: unknown }>;
    for (const [k, v] of Object.entries(SETTING_DEFAULTS)) {
      assert.ok(props[`domlora.${k}`], `setting domlora.${k} is contributed`);
      assert.deepEqual(props[`domlora.${k}`]!.default, v, `default of domlora.${k}`);
    }
  });

  it('reads settings, resolving a relative dataset against the workspace folder', async () => {
    const c = vscode.workspace.getConfiguration('domlora');
    const before = c.inspect('dataset')?.workspaceValue;
    try {
      await c.update('dataset', 'data/arith.jsonl', vscode.ConfigurationTarget.Workspace);
      const s = readSettings();
      const ws = vscode.workspace.workspaceFolders![0]!.uri.fsPath;
      assert.equal(s.dataset, path.join(ws, 'data/arith.jsonl'));
      assert.equal(s.samples, c.get('samples'));
      await c.update('dataset', '${workspaceFolder}/data/x.json', vscode.ConfigurationTarget.Workspace);
      assert.equal(readSettings().dataset, path.join(ws, 'data/x.json'));
    } finally {
      await c.update('dataset', before, vscode.ConfigurationTarget.Workspace);
    }
    assert.equal(readSettings().dataset, undefined);
  });

  it('resolves domlora.adapterDirectory like the dataset, and makes its folder or names what is in the way', async () => {
    const c = vscode.workspace.getConfiguration('domlora');
    const before = c.inspect('adapterDirectory')?.workspaceValue;
    const ws = vscode.workspace.workspaceFolders![0]!.uri.fsPath;
    try {
      await c.update('adapterDirectory', 'out/adapters', vscode.ConfigurationTarget.Workspace);
      assert.equal(readSettings().adapterDirectory, path.join(ws, 'out/adapters'));
      await c.update('adapterDirectory', '${workspaceFolder}/adapters', vscode.ConfigurationTarget.Workspace);
      assert.equal(readSettings().adapterDirectory, path.join(ws, 'adapters'));
    } finally {
      await c.update('adapterDirectory', before, vscode.ConfigurationTarget.Workspace);
    }
    assert.equal(readSettings().adapterDirectory, undefined);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-folder-'));
    try {
      assert.equal(ensureFolder(path.join(tmp, 'a', 'b')), undefined);
      assert.ok(fs.statSync(path.join(tmp, 'a', 'b')).isDirectory());
      assert.equal(ensureFolder(path.join(tmp, 'a', 'b')), undefined, 'an existing folder is fine');
      const file = path.join(tmp, 'file');
      fs.writeFileSync(file, 'x');
      assert.equal(ensureFolder(file), 'a file exists at that path');
      assert.equal(ensureFolder(path.join(file, 'x', 'y')), `${file} is a file, not a folder`);
      assert.deepEqual(fs.readdirSync(tmp).sort(), ['a', 'file']);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('recognises Hugging Face configs', () => {
    assert.equal(looksLikeModelConfig('{"model_type":"llama"}'), true);
    assert.equal(looksLikeModelConfig('{"architectures":["X"]}'), true);
    assert.equal(looksLikeModelConfig('{"name":"my-app"}'), false);
    assert.equal(looksLikeModelConfig('not json'), false);
  });
});

describe('status bar rendering', () => {
  it('shows the backend when idle', () => {
    const v = renderStatus({ kind: 'idle', backend: { backend: 'wasm', detail: 'wasm, SIMD on, single thread' } });
    assert.equal(v.text, '$(circuit-board) DomLoRA: wasm');
    assert.match(v.tooltip, /Backend: wasm, SIMD on, single thread\./);
    assert.equal(renderStatus({ kind: 'idle' }).text, '$(circuit-board) DomLoRA');
    assert.match(renderStatus({ kind: 'idle', backend: { backend: 'wasm' }, lastError: 'boom' }).text, /warning/);
  });

  it('names the GPU adapter beside webgpu, with the driver in the tooltip', () => {
    const detail = 'webgpu (Dawn: llvmpipe: Mesa 25.0.7 (LLVM 15.0.6), a software adapter)';
    const v = renderStatus({ kind: 'idle', backend: { backend: 'webgpu', device: 'llvmpipe', detail } });
    assert.equal(v.text, '$(circuit-board) DomLoRA: webgpu (llvmpipe)');
    assert.ok(v.tooltip.includes(detail));
  });

  it('shows phase, count, loss and ETA while a job runs', () => {
    const v = renderStatus({
      kind: 'running', job: 'probe', model: 'm', startedAt: 0,
      progress: { phase: 'probe', done: 12, total: 32, loss: 2.3141, etaSeconds: 42 },
    });
    assert.equal(v.text, '$(sync~spin) DomLoRA: probe 12/32 · loss 2.31 · ETA 0:42');
    assert.equal(v.command, 'domlora.revealPanel');
    const t = renderStatus({ kind: 'running', job: 'train', model: 'm', startedAt: 0, progress: { phase: 'train', done: 5, total: 100, loss: 1.5, etaSeconds: 3725 } });
    assert.equal(t.text, '$(sync~spin) DomLoRA: train 5/100 · loss 1.50 · ETA 1:02:05');
    assert.equal(renderStatus({ kind: 'running', job: 'probe', model: 'm', startedAt: 0, progress: { phase: 'load', done: 0, total: 1 } }).text,
      '$(sync~spin) DomLoRA: load…');
    assert.equal(formatDuration(61), '1:01');
  });

  it('recognises out-of-memory deaths', () => {
    assert.equal(looksLikeOutOfMemory('FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory', null), true);
    assert.equal(looksLikeOutOfMemory('', 'SIGKILL'), true);
    assert.equal(looksLikeOutOfMemory('TypeError: x', null), false);
  });
});

describe('webview protocol', () => {
  it('declares each message once, with a method and a type guard', () => {
    const msg = PlaceCommand.make({ module: 'model.layers.1.mlp.down_proj' });
    assert.deepEqual(msg, { method: 'place', params: { module: 'model.layers.1.mlp.down_proj' } });
    assert.equal(PlaceCommand.is(msg), true);
    assert.equal(TrainCommand.is(msg), false);
    assert.equal(StateNotification.is({ method: 'state', params: {} }), true);
    assert.equal(TrainPointNotification.is(null), false);
    const methods = [PlaceCommand, TrainCommand, StateNotification, TrainPointNotification].map((t) => t.method);
    assert.equal(new Set(methods).size, methods.length);
  });

  it('formats module names and shares for the grid', () => {
    // Layer and kind come from the report, not from the name; a name the report lacks is shown whole.
    const report = { modules: [
      { name: 'model.layers.3.self_attn.q_proj', layer: 3, kind: 'q_proj' },
      // GPT-2: blocks are transformer.h.N, and the kind keeps its group (two different c_proj modules).
      { name: 'transformer.h.2.mlp.c_proj', layer: 2, kind: 'mlp.c_proj' },
    ] };
    assert.equal(moduleGroup('model.layers.12.mlp.down_proj'), 'mlp');
    assert.equal(moduleLabel('model.layers.3.self_attn.q_proj', report), 'layer 3 · q_proj');
    assert.equal(moduleGroup('transformer.h.2.attn.c_proj'), 'attn');
    assert.equal(moduleLabel('transformer.h.2.mlp.c_proj', report), 'layer 2 · mlp.c_proj');
    assert.equal(moduleLabel('model.layers.9.mlp.up_proj', report), 'model.layers.9.mlp.up_proj');
    assert.equal(moduleLabel('model.layers.3.self_attn.q_proj', undefined), 'model.layers.3.self_attn.q_proj');
    assert.equal(percent(0.1234), '12.3%');
    assert.equal(percent(0.0004), '<0.1%');
    assert.equal(colourPosition(0.05, 0.1, 'linear'), 0.5);
    assert.equal(colourPosition(0.1, 0.1, 'log'), 1);
    assert.equal(colourPosition(0.0001, 0.1, 'log'), 0);
    assert.deepEqual(legendTicks(0.2, 'linear'), [0, 0.1, 0.2]);
    assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
    for (const [layers, every, dom] of [[80, 2, 3], [80, 2, 78], [64, 2, 63], [48, 3, 10], [80, 2, 0]] as const) {
      const rows = [...labelledRows(layers, every, dom)].sort((a, b) => a - b);
      assert.ok(rows.includes(dom), 'the dominant layer is labelled');
      for (let i = 1; i < rows.length; i++) assert.ok(rows[i]! - rows[i - 1]! >= every, `labels ${rows[i - 1]} and ${rows[i]} keep apart`);
      assert.ok(rows.length >= Math.floor(layers / every) - 2, 'most rows that can be labelled are');
    }
  });

  it('ships its webview assets in dist/ and media/', () => {
    const root = vscode.extensions.getExtension(EXT_ID)!.extensionPath;
    for (const f of ['dist/webview.js', 'dist/vscode-elements.js', 'dist/codicon.css', 'dist/codicon.ttf', 'media/heatmap.css', 'dist/worker.js']) {
      assert.ok(fs.existsSync(path.join(root, f)), `${f} exists`);
    }
  });
});
