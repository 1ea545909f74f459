// Backend selection: the best available one runs, the skipped ones are named, an explicit choice fails clearly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { STORIES, tmpDir } from '../helpers/reference';
import { shortAdapterName } from '../../src/engine/runtime/backend';

function cli(args: string[], env: Record<string, string> = {}) {
  const e = { ...process.env, ...env };
  delete e.DOMLORA_BACKEND;
  return spawnSync(process.execPath, [path.resolve('dist/cli.js'), ...args], { encoding: 'utf8', env: e, timeout: 120_000 });
}

test('auto falls back past missing native and GPU backends to wasm, and says why each was skipped', () => {
  const data = path.join(tmpDir(), 'd.jsonl');
  fs.writeFileSync(data, JSON.stringify({ text: 'Once upon a time, there was a little girl.' }) + '\n');
  const r = cli(['eval', STORIES, '--data', data, '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout.trim().split('\n').pop()!).backend, 'wasm');
  assert.match(r.stderr, /backend: wasm, SIMD on/);
  assert.match(r.stderr, /skipped: .*@tensorflow\/tfjs-node-gpu: not installed/);
  // A software GPU (this project's CI has lavapipe) is never chosen on its own; no adapter at all is said too.
  assert.match(r.stderr, /webgpu: (no Vulkan loader|no GPU adapter found|only a software adapter \(.*\), used only when asked for with --backend webgpu)/);
  // An explicit backend that cannot start is an error, not a silent fallback.
  const g = cli(['eval', STORIES, '--data', data, '--backend', 'webgpu'], { VK_DRIVER_FILES: '/nonexistent.json' });
  assert.equal(g.status, 2);
  assert.match(g.stderr, /backend "webgpu" could not be started: webgpu: /);
  const t = cli(['eval', STORIES, '--data', data, '--backend', 'tensorflow']);
  assert.equal(t.status, 2);
  assert.match(t.stderr, /tfjs-node-gpu: not installed; @tensorflow\/tfjs-node: not installed/);
  const c = cli(['eval', STORIES, '--data', data, '--backend', 'cpu', '--json']);
  assert.equal(c.status, 0, c.stderr);
  const cpu = JSON.parse(c.stdout.trim().split('\n').pop()!);
  const wasm = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(cpu.backend, 'cpu');
  assert.ok(Math.abs(cpu.meanLoss - wasm.meanLoss) < 1e-5, `cpu ${cpu.meanLoss} vs wasm ${wasm.meanLoss}`);
});

test('the adapter\'s short name: the description\'s head, or Dawn\'s device id when the head is only the vendor', () => {
  // As reported by Dawn here (lavapipe) and on the H200 (docs/device/run1/gpu-check.log).
  assert.equal(shortAdapterName({ info: { description: 'llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1', vendor: 'mesa', device: 'llvmpipe-llvm-15-0-6-256-bits-' } }), 'llvmpipe');
  assert.equal(shortAdapterName({ info: { description: 'NVIDIA: 580.159.04 580.159.4.0', vendor: 'nvidia', device: 'nvidia-h200' } }), 'nvidia-h200');
  assert.equal(shortAdapterName({ info: { vendor: 'apple' } }), 'apple');
  assert.equal(shortAdapterName({}), 'unnamed adapter');
});
