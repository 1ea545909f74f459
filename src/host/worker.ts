// The extension host's side of the worker process: forks `dist/worker.js`, routes the worker's typed messages to
// the request that caused them, cancels, and turns a crash into an error for every job in flight. The host never
// runs tensor code; if the worker dies, the next request forks a fresh one.
import { fork, type ChildProcess } from 'node:child_process';
import type {
  Backend, BackendChoice, BackendInfo, ErrorCode, ErrorInfo, Method, MethodParams, MethodResult, Progress, WorkerMessage, WorkerRequest,
  WorkerRequestOf,
} from '../protocol/messages';

/** A failed job, with the protocol's error code so callers can tell bad input from a cancel from a crash. */
export class JobError extends Error {
  constructor(readonly code: ErrorCode, message: string, readonly file?: string) {
    super(message);
    this.name = 'JobError';
  }
  static from(info: ErrorInfo): JobError {
    return new JobError(info.code, info.message, info.file);
  }
}

export interface JobHandlers {
  onProgress?(progress: Progress): void;
  onLog?(level: 'info' | 'warn' | 'error', message: string): void;
}

export interface ReadyInfo extends BackendInfo { pid: number }

export interface WorkerClientOptions {
  /** Absolute path of the worker script. */
  script: string;
  /** Where the worker's own log lines and stderr go (the "DomLoRA" output channel). */
  log(line: string): void;
  /** The backend the worker should choose at start-up ("auto": best available). */
  backend?(): BackendChoice;
  /** Extra environment for the worker (e.g. DOMLORA_NATIVE_DIR, where the native backend was installed). */
  env?(): Record<string, string>;
  /** Seconds to wait for `ready` before giving up. */
  startTimeoutSeconds?: number;
  /** Seconds a cancelled job may take to stop before the worker is killed. */
  cancelGraceSeconds?: number;
  /** Seconds the worker may sit idle before it is stopped to give its memory back. */
  idleSeconds?: number;
}

interface Pending {
  id: number;
  method: Method;
  handlers: JobHandlers;
  /** Settles the request with the worker's result, which is of the request's own method (see `route`). */
  resolve(value: MethodResult<Method>): void;
  reject(err: JobError): void;
  cancelTimer?: NodeJS.Timeout;
  /** The process the request went to: when it dies, only its requests fail. */
  child?: ChildProcess;
}

/** Recognises the ways a process reports running out of memory, in the worker's stderr or its exit. */
export function looksLikeOutOfMemory(stderrTail: string, signal: NodeJS.Signals | null): boolean {
  return signal === 'SIGKILL'
    || /heap out of memory|Cannot enlarge memory|Array buffer allocation failed|out of memory|std::bad_alloc/i.test(stderrTail);
}

export class WorkerClient {
  private child?: ChildProcess;
  private starting?: Promise<ReadyInfo>;
  private readyInfo?: ReadyInfo;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private stderrTail = '';
  private startError?: string;
  private idleTimer?: NodeJS.Timeout;
  private disposed = false;
  /** Processes we stopped on purpose (idle, or a cancel that did not land): their exit is not a crash. */
  private readonly retiring = new Set<ChildProcess>();
  private readonly readyListeners = new Set<(info: ReadyInfo) => void>();
  private readonly exitListeners = new Set<(reason: string) => void>();
  /** What the running worker was started with: a request finds it stale when the choice changed since. */
  private startedWith?: string;
  private stale = false;

  constructor(private readonly options: WorkerClientOptions) {}

  get backend(): Backend | undefined { return this.readyInfo?.backend; }
  /** The running worker's backend with its device and description, once it said `ready`. */
  get backendInfo(): BackendInfo | undefined {
    return this.readyInfo && { backend: this.readyInfo.backend, device: this.readyInfo.device, detail: this.readyInfo.detail };
  }
  get pid(): number | undefined { return this.child?.pid; }
  get busy(): boolean { return this.pending.size > 0; }

  onDidReady(listener: (info: ReadyInfo) => void): { dispose(): void } {
    this.readyListeners.add(listener);
    return { dispose: () => this.readyListeners.delete(listener) };
  }

  onDidExit(listener: (reason: string) => void): { dispose(): void } {
    this.exitListeners.add(listener);
    return { dispose: () => this.exitListeners.delete(listener) };
  }

  /** Starts the worker if it is not running, and resolves once it said `ready`. */
  start(): Promise<ReadyInfo> {
    if (this.disposed) return Promise.reject(new JobError('internal', 'DomLoRA is shutting down'));
    this.retireIfStale();
    if (this.starting) return this.starting;
    this.starting = new Promise<ReadyInfo>((resolve, reject) => {
      const backend = this.options.backend?.() ?? 'auto';
      const extra = this.options.env?.() ?? {};
      const env: NodeJS.ProcessEnv = { ...process.env, ...extra, ELECTRON_RUN_AS_NODE: '1', DOMLORA_BACKEND: backend };
      this.startedWith = startKey(backend, extra);
      this.stale = false;
      let child: ChildProcess;
      try {
        // execArgv is emptied so the worker does not inherit the extension host's inspector or loader flags.
        child = fork(this.options.script, [`--backend=${backend}`], {
          stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv: [], env, serialization: 'json',
        });
      } catch (err) {
        this.starting = undefined;
        reject(new JobError('internal', `could not start the DomLoRA worker (${this.options.script}): ${String(err)}`));
        return;
      }
      this.child = child;
      this.stderrTail = '';
      this.startError = undefined;
      this.options.log(`[host] started worker pid ${child.pid} (${this.options.script}, backend ${backend})`);
      const timeout = setTimeout(() => {
        reject(new JobError('internal', `the DomLoRA worker did not start within ${this.startTimeout()} s`));
        child.kill('SIGKILL');
      }, this.startTimeout() * 1000);

      child.stdout?.setEncoding('utf8').on('data', (d: string) => this.logLines('worker', d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        this.stderrTail = (this.stderrTail + d).slice(-4000);
        this.logLines('worker stderr', d);
      });
      child.on('message', (raw: unknown) => {
        const msg = raw as WorkerMessage;
        if (msg.kind === 'ready') {
          clearTimeout(timeout);
          this.readyInfo = { backend: msg.backend, device: msg.device, detail: msg.detail, pid: msg.pid };
          this.options.log(`[host] worker ready: backend ${msg.detail ?? msg.backend}, pid ${msg.pid}`);
          for (const l of this.readyListeners) l(this.readyInfo);
          resolve(this.readyInfo);
          return;
        }
        if (msg.kind === 'error' && msg.id === 0) {
          // The worker failed before it was ready (no backend could start): it says why, then exits.
          this.startError = msg.error.message;
          this.options.log(`[host] the worker could not start: ${msg.error.message}`);
          return;
        }
        this.route(msg);
      });
      child.on('error', (err) => {
        clearTimeout(timeout);
        this.options.log(`[host] worker error: ${err.message}`);
        reject(new JobError('internal', `the DomLoRA worker failed: ${err.message}`));
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timeout);
        if (this.child === child) {
          this.child = undefined;
          this.starting = undefined;
          this.readyInfo = undefined;
        }
        if (this.retiring.has(child)) {
          this.retiring.delete(child);
          this.options.log(`[host] worker pid ${child.pid} stopped`);
          this.failAll({ code: 'cancelled', message: 'cancelled' }, child);
          return;
        }
        const reason = this.exitReason(code, signal);
        this.options.log(`[host] worker exited (${code !== null ? `code ${code}` : `signal ${signal}`})`);
        reject(new JobError('internal', reason.message));
        this.failAll(reason, child);
        if (!this.disposed) for (const l of this.exitListeners) l(reason.message);
      });
    });
    // A failed start must not stick: the next request tries again with a fresh process.
    this.starting.catch(() => { this.starting = undefined; });
    return this.starting;
  }

  /**
   * Sends one request. `id` is known at once (for cancel); `result` settles with the worker's result or a JobError.
   */
  request<M extends Method>(method: M, params: MethodParams<M>, handlers: JobHandlers = {}): { id: number; result: Promise<MethodResult<M>> } {
    const id = this.nextId++;
    this.clearIdle();
    this.retireIfStale();
    const result = new Promise<MethodResult<M>>((resolve, reject) => {
      // The worker answers request `id` with a result of `method`; the compiler cannot follow that across the
      // process boundary, so this is the one place where a result of some method is taken as one of M.
      const p: Pending = { id, method, handlers, resolve: (value) => resolve(value as MethodResult<M>), reject };
      this.pending.set(id, p);
      this.start().then(() => {
        if (!this.pending.has(id)) return; // cancelled while the worker was starting
        const msg: WorkerRequestOf<M> = { kind: 'request', id, method, params };
        this.options.log(`[host] -> ${method} #${id} ${JSON.stringify(params)}`);
        p.child = this.child;
        this.child?.send(msg);
      }, (err: JobError) => {
        if (this.pending.delete(id)) reject(err);
      });
    });
    result.then(() => this.armIdle(), () => this.armIdle());
    return { id, result };
  }

  /** Asks the worker to stop job `id`; if it has not stopped after the grace period, the worker is killed. */
  cancel(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    if (!this.child || !this.readyInfo) {
      this.pending.delete(id);
      p.reject(new JobError('cancelled', 'cancelled'));
      return;
    }
    this.options.log(`[host] -> cancel #${id}`);
    const msg: WorkerRequest = { kind: 'cancel', id };
    this.child.send(msg);
    // A job that does not stop in time is stopped with its process: that is always safe, because the engine
    // writes every file under a temporary name and renames it, so a killed worker leaves nothing partial.
    const grace = (this.options.cancelGraceSeconds ?? 5) * 1000;
    p.cancelTimer ??= setTimeout(() => {
      if (!this.pending.has(id)) return;
      this.options.log(`[host] job #${id} did not stop within ${grace / 1000} s of cancel: stopping the worker`);
      this.pending.delete(id);
      p.reject(new JobError('cancelled', 'cancelled'));
      this.kill();
    }, grace);
  }

  /**
   * The next request runs in a fresh worker (a backend was installed, or the choice changed): an idle worker stops
   * now, a busy one once its jobs are done.
   */
  restartWhenIdle(): void {
    this.stale = true;
    if (!this.pending.size) this.retireIfStale();
  }

  /** An idle worker started with another backend choice or environment than the options give now is stopped. */
  private retireIfStale(): void {
    if (!this.child || this.pending.size) return;
    const now = startKey(this.options.backend?.() ?? 'auto', this.options.env?.() ?? {});
    if (!this.stale && now === this.startedWith) return;
    this.options.log(`[host] restarting the worker: ${this.stale ? 'the backends changed' : 'the setting domlora.backend changed'}`);
    this.detach()?.kill();
  }

  /** Stops the worker process now; its jobs in flight fail as cancelled, and the next request forks a fresh one. */
  kill(): void {
    const child = this.detach();
    if (child && child.exitCode === null) child.kill('SIGKILL');
  }

  /** Forgets the current process (marked as stopped on purpose) so the next request starts a new one. */
  private detach(): ChildProcess | undefined {
    const child = this.child;
    if (child) this.retiring.add(child);
    this.child = undefined;
    this.starting = undefined;
    this.readyInfo = undefined;
    return child;
  }

  dispose(): void {
    this.disposed = true;
    this.clearIdle();
    for (const p of this.pending.values()) if (p.cancelTimer) clearTimeout(p.cancelTimer);
    this.failAll({ code: 'cancelled', message: 'DomLoRA was shut down' });
    this.kill();
  }

  private route(msg: WorkerMessage): void {
    if (msg.kind === 'ready') return;
    const p = this.pending.get(msg.id);
    switch (msg.kind) {
      case 'progress':
        p?.handlers.onProgress?.(msg.progress);
        return;
      case 'log':
        this.options.log(`[${msg.level}] ${msg.message}`);
        p?.handlers.onLog?.(msg.level, msg.message);
        return;
      case 'result':
        if (!p) return;
        this.settle(p);
        this.options.log(`[host] <- result #${msg.id} (${p.method})`);
        p.resolve(msg.result);
        return;
      case 'error':
        if (!p) return;
        this.settle(p);
        this.options.log(`[host] <- error #${msg.id} (${p.method}): ${msg.error.code}: ${msg.error.message}`);
        p.reject(JobError.from(msg.error));
        return;
    }
  }

  private settle(p: Pending): void {
    if (p.cancelTimer) clearTimeout(p.cancelTimer);
    this.pending.delete(p.id);
  }

  /** Fails the requests sent to `child` (all requests when none is named). */
  private failAll(reason: { code: ErrorCode; message: string }, child?: ChildProcess): void {
    const all = [...this.pending.values()].filter((p) => !child || p.child === child);
    for (const p of all) this.pending.delete(p.id);
    for (const p of all) {
      if (p.cancelTimer) clearTimeout(p.cancelTimer);
      // A job that was being cancelled when the worker died was cancelled, whatever killed the process.
      p.reject(p.cancelTimer ? new JobError('cancelled', 'cancelled') : new JobError(reason.code, reason.message));
    }
  }

  private exitReason(code: number | null, signal: NodeJS.Signals | null): { code: ErrorCode; message: string } {
    if (this.disposed) return { code: 'cancelled', message: 'DomLoRA was shut down' };
    const tail = this.startError ? `could not start its backend: ${this.startError}` : lastErrorLine(this.stderrTail);
    if (looksLikeOutOfMemory(this.stderrTail, signal)) {
      return {
        code: 'out-of-memory',
        message: 'The DomLoRA worker ran out of memory and was stopped. Nothing partial was written. '
          + 'Try fewer samples, a shorter sequence length (domlora.samples, domlora.seqLen) or a smaller model.'
          + (tail ? ` (${tail})` : ''),
      };
    }
    return {
      code: 'internal',
      message: `The DomLoRA worker stopped unexpectedly (${code !== null ? `exit code ${code}` : `signal ${signal}`}). `
        + 'Nothing partial was written; the next job starts a fresh worker. See the "DomLoRA" output for details.'
        + (tail ? ` (${tail})` : ''),
    };
  }

  private logLines(prefix: string, data: string): void {
    for (const line of data.split('\n')) if (line.trim()) this.options.log(`[${prefix}] ${line}`);
  }

  private startTimeout(): number { return this.options.startTimeoutSeconds ?? 120; }

  private armIdle(): void {
    this.clearIdle();
    if (this.pending.size || !this.child) return;
    if (this.stale) { this.retireIfStale(); return; }
    const idle = (this.options.idleSeconds ?? 300) * 1000;
    this.idleTimer = setTimeout(() => {
      if (this.pending.size) return;
      this.options.log('[host] stopping the idle worker to give its memory back');
      this.detach()?.kill();
    }, idle);
    this.idleTimer.unref?.();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}

function startKey(backend: BackendChoice, env: Record<string, string>): string {
  return JSON.stringify([backend, Object.entries(env).sort()]);
}

/** The most telling line of a crashed process's stderr: the last error message, not a stack frame. */
export function lastErrorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l && !/^at\s/.test(l));
  const errorLine = [...lines].reverse().find((l) => /error|abort|fatal|killed|memory/i.test(l)) ?? lines[lines.length - 1] ?? '';
  return errorLine.length > 300 ? `${errorLine.slice(0, 297)}…` : errorLine;
}
