import type { Progress } from '../../protocol/messages';
import { CancelledError } from './errors';

/** What every long engine call receives from its front end (the worker or the CLI). */
export interface JobHooks {
  onProgress?(p: Progress): void;
  log?(level: 'info' | 'warn' | 'error', message: string): void;
  signal?: AbortSignal;
}

export function throwIfCancelled(hooks: JobHooks | undefined): void {
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
 * A record's pass as steps: the generator yields between layers. `runSteps` runs it straight through (tests, the
 * bench); `runStepsAsync` lets the event loop run at every step and stops with a CancelledError as soon as the job is
 * cancelled, so a cancel lands within one layer, not one record. Stopping a pass early runs its `finally` blocks:
 * nothing it uploaded stays on the backend.
 */
export type Steps<T> = Generator<void, T, void>;

export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

export async function runStepsAsync<T>(steps: Steps<T>, hooks: JobHooks | undefined): Promise<T> {
  let finished = false;
  try {
    for (;;) {
      const r = steps.next();
      if (r.done) { finished = true; return r.value; }
      await yieldToEvents();
      throwIfCancelled(hooks);
    }
  } finally {
    if (!finished) {
      try { steps.return(undefined as never); } catch { /* the error that stopped the pass is the one to report */ }
    }
  }
}
