import type * as tf from '@tensorflow/tfjs-core';
import type { Progress } from '../../protocol/messages';
import { CancelledError } from './errors';
import { throwIfBackendFailed } from './backend';

/** What every long engine call receives from its front end (the worker or the CLI). */
export interface JobHooks {
  onProgress?(p: Progress): void;
  log?(level: 'info' | 'warn' | 'error', message: string): void;
  signal?: AbortSignal;
}

/** Stops a job that was cancelled, or whose backend failed (a GPU device lost): called between every step. */
export function throwIfCancelled(hooks: JobHooks | undefined): void {
  throwIfBackendFailed();
  if (hooks?.signal?.aborted) throw new CancelledError();
}

/** Estimates seconds left from the time spent on `done` of `total` units. */
export function eta(startMs: number, done: number, total: number): number | undefined {
  if (done <= 0) return undefined;
  const elapsed = (Date.now() - startMs) / 1000;
  return (elapsed / done) * (total - done);
}

/**
 * Lets the event loop run between records or steps: the worker's cancel message and the CLI's Ctrl-C arrive as
 * events, and a loop of synchronous tensor work would never see them.
 */
export function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A record's pass as steps: the generator yields between layers, and yields a `Read` when it needs a tensor's values
 * (a loss, the PAGE values), which the driver reads and sends back in. `runSteps` runs it straight through with
 * synchronous reads (tests and the bench on CPU backends); `runStepsAsync` reads with `await t.data()`, the only read
 * a GPU backend offers in Node, lets the event loop run at every layer and stops with a CancelledError as soon as the
 * job is cancelled, so a cancel lands within one layer, not one record. Stopping a pass early runs its `finally`
 * blocks: nothing it uploaded stays on the backend.
 */
export interface Read { read: tf.Tensor }
export type Values = Float32Array | Int32Array | Uint8Array;
export type Steps<T> = Generator<Read | void, T, Values | undefined>;

/** Inside a step generator: `const values = yield* read(t)`. */
export function* read(t: tf.Tensor): Generator<Read, Values, Values | undefined> {
  const values = yield { read: t };
  if (!values) throw new Error('a step asked for values and the driver sent none');
  return values;
}

/** Runs the steps with synchronous reads: CPU backends only (wasm, cpu, tensorflow); a GPU backend needs runStepsAsync. */
export function runSteps<T>(steps: Steps<T>): T {
  let finished = false;
  let input: Values | undefined;
  try {
    for (;;) {
      let r: IteratorResult<Read | void, T>;
      try {
        r = steps.next(input);
      } catch (err) {
        throwIfBackendFailed(); // a fault explains a failed step better than what it threw
        throw err;
      }
      throwIfBackendFailed();
      if (r.done) { finished = true; return r.value; }
      input = r.value ? r.value.read.dataSync() as Values : undefined;
    }
  } finally {
    if (!finished) {
      try { steps.return(undefined as never); } catch { /* the error that stopped the pass is the one to report */ }
    }
  }
}

export async function runStepsAsync<T>(steps: Steps<T>, hooks: JobHooks | undefined): Promise<T> {
  let finished = false;
  let input: Values | undefined;
  try {
    for (;;) {
      let r: IteratorResult<Read | void, T>;
      try {
        r = steps.next(input);
        if (r.value && !r.done) input = await r.value.read.data() as Values;
      } catch (err) {
        // A dead GPU makes ops throw bare errors ("" after a device is destroyed): report the fault instead.
        throwIfBackendFailed();
        throw err;
      }
      if (r.done) { throwIfBackendFailed(); finished = true; return r.value; }
      if (r.value) { throwIfBackendFailed(); continue; }
      input = undefined;
      await yieldToEvents();
      throwIfCancelled(hooks);
    }
  } finally {
    if (!finished) {
      try { steps.return(undefined as never); } catch { /* the error that stopped the pass is the one to report */ }
    }
  }
}
