// The host's WorkerClient (plain node: it imports no `vscode`) against the real worker: each method's result arrives
// with the type the protocol declares for it, and a failure arrives as a JobError with the protocol's code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import type { InfoResult, ProbeReport } from '../../src/protocol/messages';
import { JobError, WorkerClient } from '../../src/host/worker';
import { modelInfo } from '../../src/engine/hf/folder';
import { STORIES, tmpDir } from '../helpers/reference';

test('WorkerClient: typed results per method, typed errors', async () => {
  const lines: string[] = [];
  const client = new WorkerClient({ script: path.resolve('dist/worker.js'), log: (l) => lines.push(l), backend: () => 'wasm' });
  try {
    // No cast: `info` resolves to an InfoResult, so a field the protocol does not declare fails to compile.
    const info: InfoResult = await client.request('info', { modelDir: STORIES, rank: 4 }).result;
    assert.deepEqual(info, modelInfo(STORIES, 4));
    assert.equal(info.modules[0]!.adapterParams, 4 * (info.modules[0]!.dIn + info.modules[0]!.dOut));
    // @ts-expect-error the result of `info` is no ProbeReport
    const wrong: ProbeReport = await client.request('info', { modelDir: STORIES }).result;
    assert.equal('dominant' in wrong, false);

    const err = await client.request('export', { adapterDir: tmpDir(), format: 'peft-config', out: path.join(tmpDir(), 'x.py') }).result
      .then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof JobError);
    assert.equal(err.code, 'bad-input');
    assert.match(err.message, /adapter_config\.json/);
    assert.equal(client.backend, 'wasm');
  } finally {
    client.dispose();
  }
  assert.ok(lines.some((l) => l.includes('<- result #1 (info)')), 'the client logged the result');
});

test('WorkerClient: ready carries the backend\'s detail; a changed backend choice restarts an idle worker, not a busy one', async () => {
  const lines: string[] = [];
  let choice: 'wasm' | 'cpu' = 'wasm';
  const client = new WorkerClient({ script: path.resolve('dist/worker.js'), log: (l) => lines.push(l), backend: () => choice });
  try {
    await client.request('info', { modelDir: STORIES }).result;
    const first = client.pid;
    assert.equal(client.backendInfo?.backend, 'wasm');
    assert.match(client.backendInfo?.detail ?? '', /^wasm, SIMD (on|off)/);
    assert.equal(client.backendInfo?.device, undefined);
    // Same choice: the same process answers.
    await client.request('info', { modelDir: STORIES }).result;
    assert.equal(client.pid, first);
    // The setting changes: the idle worker is replaced by one on the new backend.
    choice = 'cpu';
    await client.request('info', { modelDir: STORIES }).result;
    assert.notEqual(client.pid, first);
    assert.equal(client.backend, 'cpu');
    assert.ok(lines.some((l) => /restarting the worker: the setting domlora.backend changed/.test(l)));
    // restartWhenIdle while a job runs: that job finishes in the old process, the next one gets a new process.
    const second = client.pid;
    const busy = client.request('info', { modelDir: STORIES });
    client.restartWhenIdle();
    await busy.result;
    await client.request('info', { modelDir: STORIES }).result;
    assert.notEqual(client.pid, second);
    assert.ok(lines.some((l) => /restarting the worker: the backends changed/.test(l)));
  } finally {
    client.dispose();
  }
});
