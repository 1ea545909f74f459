import type { ErrorCode, ErrorInfo } from '../../protocol/messages';

/**
 * An error the user can act on. `code` decides the exit status of the CLI (bad-input -> 2) and how the extension
 * reports it; `file` names the file that is wrong, when there is one.
 */
export class DomLoraError extends Error {
  constructor(readonly code: ErrorCode, message: string, readonly file?: string) {
    super(message);
    this.name = 'DomLoraError';
  }
  toInfo(): ErrorInfo {
    return { code: this.code, message: this.message, ...(this.file ? { file: this.file } : {}) };
  }
}

/** Bad input from the user: names the file and what is wrong with it. */
export function badInput(message: string, file?: string): DomLoraError {
  return new DomLoraError('bad-input', file ? `${file}: ${message}` : message, file);
}

/**
 * The backend itself failed (a GPU device lost, out of GPU memory): the job stops, and the process should not run
 * another job on the same backend (the worker exits after reporting it, so the next job gets a fresh one).
 */
export class BackendFailedError extends DomLoraError {
  readonly fatal = true;
}

export class CancelledError extends DomLoraError {
  constructor() { super('cancelled', 'cancelled'); }
}

/** Converts anything thrown into the protocol's error shape. */
export function toErrorInfo(err: unknown): ErrorInfo {
  if (err instanceof DomLoraError) return err.toInfo();
  const message = err instanceof Error ? err.message : String(err);
  if (/out of memory|OOM|Aborted\(\)|Cannot enlarge memory|Array buffer allocation failed/i.test(message)) {
    return { code: 'out-of-memory', message: `out of memory: ${message}` };
  }
  return { code: 'internal', message };
}
