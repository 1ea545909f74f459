// The native backend's mechanics (#12 item 7), with the stand-in packages of test/fixtures/native-backend (the real
// tfjs-node downloads libtensorflow, which cannot be reached here): npm installs a tarball into a staging folder, a
// failing install is reported with npm's reason and leaves nothing, the worker loads the package from the folder
// (DOMLORA_NATIVE_DIR) with one tfjs-core, and jobs run on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { commitInstall, findOnPath, NativeInstallError, nativeOptions, npmInstall, telling } from '../../src/host/native';
import { WorkerClient } from '../../src/host/worker';
import { initBackend } from '../../src/engine/runtime/backend';
import { loadNativePackage } from '../../src/engine/runtime/native';
import { STORIES, tmpDir } from '../helpers/reference';

const fixtures = path.resolve('test/fixtures/native-backend');
const work = tmpDir('domlora-native-');
const storage = path.join(work, 'globalStorage');
const dir = path.join(storage, 'native-backend');
// The stand-in's dependencies (tfjs-core, tfjs-backend-cpu) come from npm's cache, which `npm ci` filled.
const npmEnv = { npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' };
const npm = findOnPath('npm');

function pack(fixture: string): string {
  const name = execFileSync(npm!, ['pack', path.join(fixtures, fixture), '--pack-destination', work, '--silent'], { encoding: 'utf8', env: { ...process.env, ...npmEnv } }).trim().split('\n').pop()!;
  const file = path.join(work, fixture + '.tgz');
  fs.renameSync(path.join(work, name), file);
  return file;
}

test('which package fits the machine; npm is looked up on PATH, and its failure is told in its own words', () => {
  assert.deepEqual(nativeOptions({ platform: 'linux', arch: 'x64', nvidiaDriver: true }).map((o) => [o.pkg, o.recommended]),
    [['@tensorflow/tfjs-node-gpu', true], ['@tensorflow/tfjs-node', false]]);
  assert.deepEqual(nativeOptions({ platform: 'linux', arch: 'x64', nvidiaDriver: false }).map((o) => [o.pkg, o.recommended]),
    [['@tensorflow/tfjs-node', true], ['@tensorflow/tfjs-node-gpu', false]]);
  // tfjs-node-gpu exists for Linux x64 only.
  for (const [platform, arch] of [['darwin', 'arm64'], ['win32', 'x64'], ['linux', 'arm64']] as const) {
    assert.deepEqual(nativeOptions({ platform, arch, nvidiaDriver: false }).map((o) => o.pkg), ['@tensorflow/tfjs-node']);
  }
  assert.ok(npm, 'npm is on this machine\'s PATH');
  assert.equal(findOnPath('npm', { PATH: '/nonexistent:/also-not' }), undefined);
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'npm.cmd'), '');
  assert.equal(findOnPath('npm', { PATH: `C:\\nothing;${bin}`, PATHEXT: '.EXE;.CMD' }, 'win32'), path.join(bin, 'npm.cmd'));
  assert.equal(telling('npm error code 1\nnpm error path /x\nnpm error command failed\nnpm error command sh -c node install.js\n'
    + 'Error: getaddrinfo ENOTFOUND storage.googleapis.com\nnpm error A complete log of this run can be found in: /r/x.log\n'),
  'Error: getaddrinfo ENOTFOUND storage.googleapis.com');
});

test('a failing install (the install script cannot download libtensorflow): npm\'s reason, nothing left behind', async () => {
  const tgz = pack('tfjs-node-failing');
  const lines: string[] = [];
  const err = await npmInstall({ dir, spec: tgz, npm: npm!, env: npmEnv, onLine: (l) => lines.push(l) }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof NativeInstallError, String(err));
  assert.match(err.message, new RegExp(`^npm install ${tgz.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} failed \\(exit code 1\\): .*getaddrinfo ENOTFOUND storage\\.googleapis\\.com`));
  assert.ok(lines.some((l) => /Downloading libtensorflow/.test(l)), 'the install script\'s output reached the log');
  assert.deepEqual(fs.existsSync(storage) ? fs.readdirSync(storage) : [], [], 'no staging folder and no install left');
});

test('an install of the stand-in, the worker loading it from the folder with one tfjs-core, a job running on it', async () => {
  const tgz = pack('tfjs-node');
  const staging = await npmInstall({ dir, spec: tgz, npm: npm!, env: npmEnv });
  assert.ok(path.basename(staging).startsWith('native-backend.install-'));
  // As with the real package, npm put a second tfjs-core beside it.
  const copy = path.join(staging, 'node_modules/@tensorflow/tfjs-core/dist/tf-core.node.js');
  assert.ok(fs.existsSync(copy), 'the folder has its own tfjs-core');
  assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(path.join(staging, 'package.json'), 'utf8')).dependencies), ['@tensorflow/tfjs-node']);
  commitInstall(staging, dir);
  assert.ok(!fs.existsSync(staging) && fs.existsSync(path.join(dir, 'node_modules/@tensorflow/tfjs-node/index.js')));
  // A second install replaces the first.
  commitInstall(await npmInstall({ dir, spec: tgz, npm: npm!, env: npmEnv }), dir);
  assert.deepEqual(fs.readdirSync(storage), ['native-backend']);

  // The worker, as the extension starts it: `tensorflow` from DOMLORA_NATIVE_DIR.
  const data = path.join(work, 'd.jsonl');
  fs.writeFileSync(data, `${JSON.stringify({ text: 'Once upon a time, there was a little girl named Lily.' })}\n`);
  const onNative = new WorkerClient({ script: path.resolve('dist/worker.js'), log: () => {}, backend: () => 'tensorflow', env: () => ({ DOMLORA_NATIVE_DIR: dir }) });
  const onWasm = new WorkerClient({ script: path.resolve('dist/worker.js'), log: () => {}, backend: () => 'wasm' });
  try {
    const ready = await onNative.start();
    assert.equal(ready.backend, 'tensorflow');
    assert.ok(ready.detail?.startsWith(`tensorflow (@tensorflow/tfjs-node 4.22.0 from ${dir}) (skipped: @tensorflow/tfjs-node-gpu: not installed`), ready.detail);
    const native = await onNative.request('eval', { modelDir: STORIES, data }).result;
    const wasm = await onWasm.request('eval', { modelDir: STORIES, data }).result;
    assert.equal(native.backend, 'tensorflow');
    assert.ok(Math.abs(native.meanLoss - wasm.meanLoss) < 1e-4, `tensorflow (stand-in) ${native.meanLoss} vs wasm ${wasm.meanLoss}`);
  } finally {
    onNative.dispose();
    onWasm.dispose();
  }
  // Without the folder, `tensorflow` is not installed anywhere, and says where it looked.
  const none = new WorkerClient({ script: path.resolve('dist/worker.js'), log: () => {}, backend: () => 'tensorflow', env: () => ({ DOMLORA_NATIVE_DIR: path.join(work, 'nothing') }) });
  try {
    const err = await none.start().then(() => undefined, (e: unknown) => e);
    assert.match(String(err), /@tensorflow\/tfjs-node: not installed \(neither in .*nothing nor beside DomLoRA\)/);
  } finally {
    none.dispose();
  }

  // In this process: the stand-in registered its backend with this process's own tfjs-core, not the folder's copy.
  process.env.DOMLORA_NATIVE_DIR = dir;
  const report = await initBackend('tensorflow');
  assert.equal(report.backend, 'tensorflow');
  assert.equal(tf.getBackend(), 'tensorflow');
  const standIn = createRequire(path.join(dir, 'package.json'))('@tensorflow/tfjs-node') as { standIn: boolean; tfCore: typeof tf };
  assert.equal(standIn.standIn, true);
  assert.equal(standIn.tfCore.tensor, tf.tensor, 'one tfjs-core: the stand-in\'s is this process\'s');
  const sum = tf.tidy(() => tf.add(tf.tensor1d([1, 2]), tf.tensor1d([3, 4])).arraySync());
  assert.deepEqual(sum, [4, 6]);
});

test('a folder whose tfjs-core is another version is refused, naming both versions', () => {
  const fake = path.join(work, 'old');
  for (const [name, version] of [['@tensorflow/tfjs-node', '4.21.0'], ['@tensorflow/tfjs-core', '4.21.0']]) {
    const d = path.join(fake, 'node_modules', name);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, 'package.json'), JSON.stringify({ name, version, main: 'index.js' }));
    fs.writeFileSync(path.join(d, 'index.js'), 'throw new Error("must not be loaded");\n');
  }
  assert.throws(() => loadNativePackage('@tensorflow/tfjs-node', fake),
    /@tensorflow\/tfjs-node 4\.21\.0 in .*old failed to load: .*is @tensorflow\/tfjs-core 4\.21\.0, but DomLoRA runs 4\.22\.0: .*install @tensorflow\/tfjs-node@4\.22\.0 again/);
  assert.deepEqual(loadNativePackage('@tensorflow/tfjs-node-gpu', fake), { loaded: false, reason: `not installed (neither in ${fake} nor beside DomLoRA)` });
});
