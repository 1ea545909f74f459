// tfjs-wasm does not throw when XNNPACK cannot make a matmul's operator (its packed weights do not fit the full 4 GiB
// heap): it prints a warning and leaves the product unwritten. A job must stop there with a clear error, not go on
// with garbage. Run once per process (the fault stays with the process, as the worker that meets it exits): by
// test/unit/wasmfault.test.ts on the threaded module, which prints with fs.writeSync(2), and wasmfault1.test.ts on
// the stock single-threaded one, which prints with the console.warn it bound as it started.
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/engine/runtime/backend';
import { BackendFailedError } from '../../src/engine/runtime/errors';
import { runSteps, runStepsAsync, type Steps } from '../../src/engine/runtime/jobs';

interface WasmModule { HEAPU8: Uint8Array; _malloc(n: number): number; _free(p: number): void }

export const FULL_HEAP_TEST = 'a matmul XNNPACK cannot pack on a full wasm heap stops the job with a clear error instead of a wrong result';

export async function fullHeapStopsTheJob(threads: number): Promise<void> {
  const report = await initBackend('wasm', threads);
  assert.equal(report.threads, threads, `the module asked for: ${report.detail}`);
  const wasm = (tf.backend() as unknown as { wasm: WasmModule }).wasm;
  const x = tf.ones([4, 1024]) as tf.Tensor2D;
  const w = tf.ones([1024, 4096]) as tf.Tensor2D; // 16 MiB; XNNPACK packs a copy of it at its first product
  // Fill the heap in 8 MiB blocks until it is at its 4 GiB and a block no longer fits, then free three: the product's
  // output (16 KB) fits, XNNPACK's packed copy of w fits nowhere.
  const blocks: number[] = [];
  for (let p = wasm._malloc(8 << 20); p; p = wasm._malloc(8 << 20)) blocks.push(p);
  for (const p of blocks.splice(-3)) wasm._free(p);
  let y: tf.Tensor | undefined;
  function* steps(): Steps<string> {
    y = tf.matMul(x, w);
    yield;
    return 'finished';
  }
  try {
    await assert.rejects(runStepsAsync(steps(), undefined), (e: unknown) => {
      assert.ok(e instanceof BackendFailedError, String(e));
      assert.equal(e.code, 'out-of-memory');
      assert.match(e.message, /XNNPACK's xnn_create_fully_connected_nc_f32 failed \(status 6: out of memory\), the 4 GiB wasm heap is full/);
      assert.match(e.message, /nothing was written.*--seq-len/);
      return true;
    });
  } finally {
    for (const p of blocks) wasm._free(p);
  }
  // What the error stands for: tfjs-wasm only printed a warning, and the product is not x w (every entry 1024).
  assert.notEqual(y!.dataSync()[0], 1024);
  // Every later job on this process stops too, even one that computes nothing: the worker exits and a new one starts.
  assert.throws(() => runSteps((function* (): Steps<number> { yield; return 1; })()), BackendFailedError);
  tf.dispose([x, w, y!]);
}
