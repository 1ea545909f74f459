// Dawn (the WebGPU implementation under the `webgpu` package) and the Vulkan drivers print warnings straight to the
// process's stderr from native code, on every command that looks for a GPU ("maxDynamic...BuffersPerPipelineLayout
// artificially reduced", "XDG_RUNTIME_DIR is invalid", "Found no drivers!"). Node cannot catch a native write, so a
// command that may look for a GPU runs in a child process whose stderr passes through this filter, and the user's
// terminal sees DomLoRA's own lines only. DOMLORA_DEBUG=1 lets everything through.
import { spawn } from 'node:child_process';

/** Lines written by Dawn, Mesa or the Vulkan loader, not by DomLoRA. */
export const NATIVE_NOISE = [
  /^Warning: maxDynamic\w+ artificially reduced/,
  /XDG_RUNTIME_DIR/,
  /vkCreateInstance: Found no drivers/,
  /^WARNING: lavapipe is not a conformant vulkan implementation/,
  /^(MESA|ANV|RADV)[-:]/,
];

export function isNativeNoise(line: string): boolean {
  return NATIVE_NOISE.some((re) => re.test(line));
}

/** Passes text on, holding back an unfinished line only while it could still be native noise. */
export class NoiseFilter {
  private pending = '';
  constructor(private readonly write: (s: string) => void) {}

  push(chunk: string): void {
    const text = this.pending + chunk;
    const lines = text.split('\n');
    this.pending = lines.pop()!;
    for (const line of lines) if (!isNativeNoise(line.replace(/^.*\r/, ''))) this.write(line + '\n');
    // A progress line ends in \r or has no end yet: show it at once unless it may grow into a warning.
    const tail = this.pending.replace(/^.*\r/, '');
    if (this.pending && !NATIVE_NOISE_PREFIXES.some((p) => p.startsWith(tail) || tail.startsWith(p))) {
      this.write(this.pending);
      this.pending = '';
    }
  }

  end(): void {
    if (this.pending && !isNativeNoise(this.pending)) this.write(this.pending);
    this.pending = '';
  }
}

const NATIVE_NOISE_PREFIXES = ['Warning: ', 'WARNING: ', 'MESA', 'ANV', 'RADV', 'vkCreateInstance', 'XDG_RUNTIME_DIR', 'error: XDG_RUNTIME_DIR'];

/** Runs this same CLI as a child with its stderr filtered; resolves with the exit code to use. */
export function runQuietly(argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1], ...argv], {
      stdio: ['inherit', 'inherit', 'pipe'],
      env: { ...process.env, DOMLORA_QUIET_CHILD: '1', ...(process.stderr.isTTY ? { DOMLORA_STDERR_TTY: '1' } : {}) },
    });
    const filter = new NoiseFilter((s) => process.stderr.write(s));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => filter.push(d));
    // Ctrl-C reaches the child from the terminal (it handles the cancel); other signals are passed on.
    process.on('SIGINT', () => { /* the child decides */ });
    for (const sig of ['SIGTERM', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
    child.on('close', (code, signal) => {
      filter.end();
      resolve(code ?? (signal ? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGKILL' ? 9 : 15) : 1));
    });
    child.on('error', (err) => { process.stderr.write(`domlora: ${err.message}\n`); resolve(1); });
  });
}
