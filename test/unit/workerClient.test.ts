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
