// The worker: a child process of the extension host (child_process.fork) that runs engine jobs. It speaks the typed
// protocol of src/protocol/messages.ts over the IPC channel: one job at a time, progress notifications, cancel.
import type { BackendChoice, Method, MethodParams, MethodResult, WorkerMessage, WorkerRequest, WorkerRequestOf } from '../protocol/messages';
import { describeBackend, initBackend, toErrorInfo, type JobHooks } from '../engine';

function send(msg: WorkerMessage): void { process.send?.(msg); }

/** What runs each method: a method whose engine call returns another shape than its declared result fails to compile. */
type Handlers = { [M in Method]: (params: MethodParams<M>, hooks: JobHooks) => Promise<MethodResult<M>> };

// The engine is imported on first use, so the worker says `ready` before the big modules are loaded.
const handlers: Handlers = {
  info: async (p) => (await import('../engine')).modelInfo(p.modelDir, p.rank),
  eval: async (p, hooks) => (await import('../engine')).runEval(p, hooks),
  probe: async (p, hooks) => (await (await import('../engine')).runProbe(p, hooks)).report,
  train: async (p, hooks) => (await import('../engine')).runTrain(p, hooks),
  export: async (p, hooks) => (await import('../engine')).runExport(p, hooks),
  models: async (p) => (await import('../engine')).listModels(p),
  check: async (p, hooks) => (await import('../engine')).runCheck(p, hooks),
  compare: async (p) => (await import('../engine')).runCompare(p),
};

const running = new Map<number, AbortController>();

function handle<M extends Method>(req: WorkerRequestOf<M>): Promise<MethodResult<M>> {
  const controller = new AbortController();
  running.set(req.id, controller);
  const hooks: JobHooks = {
    signal: controller.signal,
    onProgress: (progress) => send({ kind: 'progress', id: req.id, progress }),
    log: (level, message) => send({ kind: 'log', id: req.id, level, message }),
  };
  // A request comes from another process: a method the table lacks is refused, not looked up on Object.prototype.
  if (!Object.hasOwn(handlers, req.method)) return Promise.reject(new Error(`unknown method ${String(req.method)}`));
  return handlers[req.method](req.params, hooks);
}

process.on('message', (msg: WorkerRequest) => {
  if (msg.kind === 'cancel') { running.get(msg.id)?.abort(); return; }
  if (msg.kind !== 'request') return;
  handle(msg).then(
    (result) => send({ kind: 'result', id: msg.id, result }),
    (err) => {
      send({ kind: 'error', id: msg.id, error: toErrorInfo(err) });
      // A failed backend (a lost GPU device) cannot run the next job: leave once the reason is on its way, and the
      // host starts a fresh worker for the next request.
      if ((err as { fatal?: boolean }).fatal) {
        process.send?.({ kind: 'log', id: msg.id, level: 'warn', message: 'the worker restarts: its backend failed' } satisfies WorkerMessage, () => process.exit(1));
      }
    },
  ).finally(() => running.delete(msg.id));
});

// The backend is chosen once, at start-up, and reported to the host (the status bar shows it when idle).
// The worker must start its backend before it knows the model: one wasm thread unless DOMLORA_THREADS asks for more
// (a second thread slows the small models down; see threadsForModel).
const choice = (process.env.DOMLORA_BACKEND || 'auto') as BackendChoice;
initBackend(choice, Number(process.env.DOMLORA_THREADS) || 1).then(
  (b) => send({ kind: 'ready', backend: b.backend, device: b.device, detail: describeBackend(b), pid: process.pid }),
  // Exit only once the reason is on its way to the host: process.send is asynchronous.
  (err) => {
    if (!process.send) process.exit(1);
    process.send({ kind: 'error', id: 0, error: toErrorInfo(err) } satisfies WorkerMessage, () => process.exit(1));
  },
);
process.on('disconnect', () => process.exit(0));
