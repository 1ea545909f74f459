import type { Progress } from '../protocol/messages';
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
