// The worker: a child process of the extension host (child_process.fork) that runs engine jobs. It speaks the typed
// protocol of src/protocol/messages.ts over the IPC channel: one job at a time, progress notifications, cancel.
import type { WorkerMessage, WorkerRequest, BackendChoice } from '../protocol/messages';
import { toErrorInfo } from '../engine/runtime/errors';
import type { JobHooks } from '../engine/runtime/jobs';
import { initBackend } from '../engine/runtime/backend';

function send(msg: WorkerMessage): void { process.send?.(msg); }

const running = new Map<number, AbortController>();

async function handle(req: Extract<WorkerRequest, { kind: 'request' }>): Promise<unknown> {
  const controller = new AbortController();
  running.set(req.id, controller);
  const hooks: JobHooks = {
    signal: controller.signal,
    onProgress: (progress) => send({ kind: 'progress', id: req.id, progress }),
    log: (level, message) => send({ kind: 'log', id: req.id, level, message }),
  };
  const p = req.params as never;
  switch (req.method) {
    case 'info': return (await import('../engine/hf/folder')).modelInfo((p as { modelDir: string }).modelDir, (p as { rank?: number }).rank);
    case 'eval': return (await import('../engine/eval/evaluate')).runEval(p, hooks);
    case 'probe': return (await (await import('../engine/probe/probe')).runProbe(p, hooks)).report;
    case 'train': return (await import('../engine/train/loop')).runTrain(p, hooks);
    case 'export': return (await import('../engine/export/exporters')).runExport(p, hooks);
    default: throw new Error(`unknown method ${String(req.method)}`);
  }
}

process.on('message', (msg: WorkerRequest) => {
  if (msg.kind === 'cancel') { running.get(msg.id)?.abort(); return; }
  if (msg.kind !== 'request') return;
  handle(msg).then(
    (result) => send({ kind: 'result', id: msg.id, result }),
    (err) => send({ kind: 'error', id: msg.id, error: toErrorInfo(err) }),
  ).finally(() => running.delete(msg.id));
});

// The backend is chosen once, at start-up, and reported to the host (the status bar shows it when idle).
// The worker must start its backend before it knows the model: one wasm thread unless DOMLORA_THREADS asks for more
// (a second thread slows the small models down; see threadsForModel).
const choice = (process.env.DOMLORA_BACKEND || 'auto') as BackendChoice;
initBackend(choice, Number(process.env.DOMLORA_THREADS) || 1).then(
  (b) => send({ kind: 'ready', backend: b.backend, pid: process.pid }),
  // Exit only once the reason is on its way to the host: process.send is asynchronous.
  (err) => { process.send?.({ kind: 'error', id: 0, error: toErrorInfo(err) } satisfies WorkerMessage, () => process.exit(1)) ?? process.exit(1); },
);
process.on('disconnect', () => process.exit(0));
