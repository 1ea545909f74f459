// `domlora`: the headless front end. Parses flags, calls the engine, prints progress to stderr and results to stdout.
// Exit codes: 0 ok, 2 bad input, 1 other failure (130 when interrupted). With --json, a failure prints one JSON object
// on stdout too, {"error": {"code", "message", "file"?}, "exitCode"}, so a script reading stdout always gets an answer.
import { DomLoraError, badInput, toErrorInfo } from '../engine';
import { USAGE, VERSION } from './args';
import { COMMANDS } from './commands';
import { runQuietly } from './quiet';
import { nearest } from '../protocol/format';

/** Commands that start a tensor backend, and so may look for a GPU (see quiet.ts). */
const STARTS_BACKEND = new Set(['eval', 'generate', 'probe', 'train', 'check', 'export', 'demo']);

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { process.stdout.write(USAGE + '\n'); return cmd ? 0 : 2; }
  if (cmd === '--version') { process.stdout.write(VERSION + '\n'); return 0; }
  const run = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!run) {
    const near = nearest(cmd, Object.keys(COMMANDS));
    throw badInput(`unknown command "${cmd}"${near.length ? `; did you mean ${near.join(' or ')}?` : ''} (domlora --help lists the commands)`);
  }
  if (rest.includes('--help') || rest.includes('-h')) { process.stdout.write(USAGE + '\n'); return 0; }
  if (STARTS_BACKEND.has(cmd) && !process.env.DOMLORA_QUIET_CHILD && !process.env.DOMLORA_DEBUG) return runQuietly(argv);
  const controller = new AbortController();
  let interrupts = 0;
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(130);
    process.stderr.write('\ncancelling (files already written stay as they were; Ctrl-C again to quit now)\n');
    controller.abort();
  });
  return run(rest, { controller });
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => { process.exitCode = code; },
  (err) => {
    const info = toErrorInfo(err);
    const exitCode = info.code === 'cancelled' ? 130 : info.code === 'bad-input' ? 2 : 1;
    if (info.code === 'cancelled') process.stderr.write('cancelled\n');
    else process.stderr.write(`domlora: ${!(err instanceof DomLoraError) && process.env.DOMLORA_DEBUG ? (err as Error).stack : info.message}\n`);
    if (argv.includes('--json')) process.stdout.write(JSON.stringify({ error: info, exitCode }) + '\n');
    process.exitCode = exitCode;
  },
).finally(() => {
  // Wasm worker threads must not keep the process alive once the job is done; exit once stdout is flushed (it is
  // asynchronous when piped, and exiting earlier would cut the JSON line).
  process.stdout.write('', () => process.stderr.write('', () => process.exit()));
});
