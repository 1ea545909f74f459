// AdamW against torch.optim.AdamW (test/reference/adamw_ref.py, float64): the same parameters after every step of a
// short run with a changing learning rate, weight decay and the batch divisor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { adamwStep } from '../../src/engine/train/adamw';
import { Rng } from '../../src/engine/runtime/rng';
import { tmpDir, maxRelErr } from '../helpers/reference';

test('adamwStep follows torch.optim.AdamW step for step (weight decay, bias correction, changing lr, batch divisor)', () => {
  const rng = new Rng(11);
  const n = 64, steps = 6, divisor = 3;
  const p0 = Array.from({ length: n }, () => rng.uniform(-1, 1));
  const grads = Array.from({ length: steps }, (_, s) => Array.from({ length: n }, () => rng.uniform(-1, 1) * (s + 1)));
  const lrs = [1e-3, 5e-3, 1e-2, 8e-3, 4e-3, 1e-3];
  const h = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
  const dir = tmpDir();
  const req = path.join(dir, 'adamw.json');
  fs.writeFileSync(req, JSON.stringify({ p: p0, grads, lrs, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weight_decay: h.weightDecay, divisor }));
  const r = spawnSync('/usr/bin/python3', [path.resolve('test/reference/adamw_ref.py'), req], { encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
  const ref = JSON.parse(r.stdout) as { p: number[][] };
  const p = Float32Array.from(p0), m = new Float32Array(n), v = new Float32Array(n);
  for (let s = 0; s < steps; s++) {
    adamwStep(p, grads[s], m, v, s + 1, lrs[s], h, divisor);
    const err = maxRelErr(Array.from(p), ref.p[s]);
    assert.ok(err < 1e-5, `step ${s + 1}: max relative difference ${err}`);
  }
  // The update moved the parameters (a test of a no-op would pass the comparison above only if torch did nothing).
  assert.ok(maxRelErr(Array.from(p), p0) > 1e-3);
});
