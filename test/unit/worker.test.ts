// The worker process speaks the protocol: ready, progress, result; cancel lands within a record, without a kill.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fork } from 'node:child_process';
import type { WorkerMessage, WorkerRequest, ProbeReport } from '../../src/protocol/messages';
import { SHARED, STORIES, tmpDir } from '../helpers/reference';

function startWorker() {
  const child = fork(path.resolve('dist/worker.js'), [], { env: { ...process.env, DOMLORA_BACKEND: 'wasm' }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  const messages: WorkerMessage[] = [];
  const waiters: ((m: WorkerMessage) => boolean)[] = [];
  child.on('message', (m: WorkerMessage) => {
    messages.push(m);
    for (let i = waiters.length - 1; i >= 0; i--) if (waiters[i](m)) waiters.splice(i, 1);
  });
  const until = (pred: (m: WorkerMessage) => boolean, ms = 60_000) => new Promise<WorkerMessage>((resolve, reject) => {
    const hit = messages.find(pred);
    if (hit) return resolve(hit);
    const t = setTimeout(() => reject(new Error('timed out waiting for a worker message')), ms);
    waiters.push((m) => { if (pred(m)) { clearTimeout(t); resolve(m); return true; } return false; });
  });
  const send = (r: WorkerRequest) => child.send(r);
  return { child, messages, until, send };
}

test('probe through the worker: ready, progress with ETA, a report; then a cancel lands within a record', async () => {
  const w = startWorker();
  try {
    const ready = await w.until((m) => m.kind === 'ready');
    assert.equal(ready.kind === 'ready' && ready.backend, 'wasm');
    const dir = tmpDir();
    const out = path.join(dir, 'report.json');
    const data = path.join(SHARED, 'data/math/gsm8k_train.jsonl');
    w.send({ kind: 'request', id: 1, method: 'probe', params: { modelDir: STORIES, data, samples: 3, seqLen: 96, out } });
    const res = await w.until((m) => (m.kind === 'result' || m.kind === 'error') && m.id === 1);
    assert.equal(res.kind, 'result', JSON.stringify(res));
    const report = (res as { result: ProbeReport }).result;
    assert.equal(report.modules.length, 35);
    assert.deepEqual(JSON.parse(fs.readFileSync(out, 'utf8')).dominant, report.dominant);
    const progress = w.messages.filter((m) => m.kind === 'progress' && m.id === 1 && m.progress.phase === 'probe');
    assert.equal(progress.length, 3);
    assert.ok(progress.some((m) => m.kind === 'progress' && m.progress.etaSeconds !== undefined));

    const out2 = path.join(dir, 'cancelled.json');
    w.send({ kind: 'request', id: 2, method: 'probe', params: { modelDir: STORIES, data, samples: 30, seqLen: 256, out: out2 } });
    await w.until((m) => m.kind === 'progress' && m.id === 2 && m.progress.phase === 'probe' && m.progress.done === 1);
    const sentAt = Date.now();
    w.send({ kind: 'cancel', id: 2 });
    const end = await w.until((m) => (m.kind === 'result' || m.kind === 'error') && m.id === 2);
    assert.equal(end.kind === 'error' && end.error.code, 'cancelled');
    const done = w.messages.filter((m) => m.kind === 'progress' && m.id === 2 && m.progress.phase === 'probe').length;
    assert.ok(done <= 2, `records finished after the cancel: ${done - 1}`);
    assert.ok(Date.now() - sentAt < 10_000);
    assert.ok(!fs.existsSync(out2), 'no report written');
    assert.equal(w.child.exitCode, null, 'the worker is still alive for the next job');
  } finally {
    w.child.kill();
  }
});
