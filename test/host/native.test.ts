// "DomLoRA: Install Native Backend…" inside VS Code, with the stand-in packages of test/fixtures/native-backend
// (the real tfjs-node downloads libtensorflow, which cannot be reached here): refused in Restricted Mode, a clear
// message without npm, a failing install reported with npm's reason and wasm left in use, then an install that
// works, after which the worker runs jobs on it from the extension's storage.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ProbeReport } from '../../src/protocol/messages';
import type { NativeInstallResult } from '../../src/host/nativeCommand';
import { findOnPath } from '../../src/host/native';
import { shellWord } from '../../src/protocol/shell';
import { ctx, lastNotice, ws } from './helpers';

const root = path.resolve(__dirname, '../../..');
const install = (opts: object) => vscode.commands.executeCommand<NativeInstallResult | undefined>('domlora.installNativeBackend', opts);

describe('the native backend, installed from the extension', function () {
  this.timeout(300_000);
  let tmp: string;
  const tarballs: Record<string, string> = {};

  before(async () => {
    await vscode.extensions.getExtension('domlora.domlora')!.activate();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-native-host-'));
    for (const f of ['tfjs-node', 'tfjs-node-failing']) {
      const name = execFileSync(findOnPath('npm')!, ['pack', path.join(root, 'test/fixtures/native-backend', f), '--pack-destination', tmp, '--silent'],
        { encoding: 'utf8' }).trim().split('\n').pop()!;
      tarballs[f] = path.join(tmp, `${f}.tgz`);
      fs.renameSync(path.join(tmp, name), tarballs[f]);
    }
  });

  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('is refused in Restricted Mode, and says why', async () => {
    const t = Date.now();
    const trusted = ctx().isTrusted;
    ctx().isTrusted = () => false;
    try {
      const r = await install({ package: '@tensorflow/tfjs-node', spec: tarballs['tfjs-node'] });
      assert.equal(r?.ok === false && r.reason, 'restricted');
    } finally {
      ctx().isTrusted = trusted;
    }
    assert.match(lastNotice(t)!.message, /not available in Restricted Mode\. Trust this workspace first/);
    assert.equal(fs.existsSync(ctx().nativeDir), false);
  });

  it('without npm on the PATH: says so, with the command to run by hand', async () => {
    const t = Date.now();
    const saved = process.env.PATH;
    process.env.PATH = path.join(tmp, 'no-npm-here');
    try {
      const r = await install({ package: '@tensorflow/tfjs-node' });
      assert.equal(r?.ok === false && r.reason, 'no-npm');
    } finally {
      process.env.PATH = saved;
    }
    const msg = lastNotice(t)!.message;
    assert.match(msg, /installing @tensorflow\/tfjs-node needs npm, and VS Code finds none on its PATH/);
    assert.ok(msg.includes(`npm install --prefix ${shellWord(ctx().nativeDir)} @tensorflow/tfjs-node@4.22.0`), msg);
  });

  it('a failing install: npm\'s reason in the message, nothing installed, the next job still on wasm', async () => {
    const settings = vscode.workspace.getConfiguration('domlora');
    await settings.update('backend', 'auto', vscode.ConfigurationTarget.Workspace);
    try {
      const t = Date.now();
      const r = await install({ package: '@tensorflow/tfjs-node', spec: tarballs['tfjs-node-failing'] });
      assert.equal(r?.ok === false && r.reason, 'npm-failed');
      const n = lastNotice(t)!;
      assert.equal(n.level, 'error');
      assert.match(n.message, /installing @tensorflow\/tfjs-node failed: npm install .* failed \(exit code 1\): .*getaddrinfo ENOTFOUND storage\.googleapis\.com.*DomLoRA keeps running on (wasm|[a-z]+)\./);
      assert.deepEqual(fs.readdirSync(path.dirname(ctx().nativeDir)).filter((f) => f.startsWith('native-backend')), [], 'nothing left in the storage');
      const ready = await ctx().worker.start();
      assert.equal(ready.backend, 'wasm', 'auto chose wasm: no native backend, lavapipe only on request');
    } finally {
      await settings.update('backend', 'wasm', vscode.ConfigurationTarget.Workspace);
    }
  });

  it('an install that works: checked, moved into the storage, and the next job runs on it', async () => {
    const settings = vscode.workspace.getConfiguration('domlora');
    await settings.update('backend', 'auto', vscode.ConfigurationTarget.Workspace);
    try {
      const t = Date.now();
      const r = await install({ package: '@tensorflow/tfjs-node', spec: tarballs['tfjs-node'] });
      assert.ok(r?.ok, JSON.stringify(r));
      const dir = ctx().nativeDir;
      assert.equal(r.dir, dir);
      assert.equal(r.backend.backend, 'tensorflow');
      assert.ok(fs.existsSync(path.join(dir, 'node_modules/@tensorflow/tfjs-node/index.js')));
      const n = lastNotice(t)!;
      assert.equal(n.level, 'info');
      assert.ok(n.message.includes(`@tensorflow/tfjs-node is installed in ${dir} and works (tensorflow (@tensorflow/tfjs-node 4.22.0 from ${dir})). The next job runs on it.`), n.message);
      // The idle worker was restarted; the next job's worker loads the backend from the storage.
      const out = path.join(tmp, 'probe-on-native.json');
      const p = await vscode.commands.executeCommand<{ report: ProbeReport }>('domlora.runProbe', vscode.Uri.file(path.join(ws(), 'tiny')),
        { data: path.join(ws(), 'data', 'arith.jsonl'), samples: 1, seqLen: 64, out });
      assert.equal(p?.report.config.backend, 'tensorflow');
      assert.equal(ctx().worker.backendInfo?.detail?.startsWith(`tensorflow (@tensorflow/tfjs-node 4.22.0 from ${dir})`), true, ctx().worker.backendInfo?.detail);
      const idle = ctx().status.current;
      assert.equal(idle.kind === 'idle' && idle.backend?.backend, 'tensorflow');
    } finally {
      await settings.update('backend', 'wasm', vscode.ConfigurationTarget.Workspace);
    }
  });
});
