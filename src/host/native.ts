// Installing the native TensorFlow backend (@tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node) into a folder of the
// extension's global storage, with the user's npm: which package fits this machine, finding npm, running it into a
// staging folder, and moving a verified install into place. Plain node (no `vscode`), so the unit tests run it; the
// command around it is nativeCommand.ts. The worker loads the package from that folder (DOMLORA_NATIVE_DIR, see
// src/engine/runtime/native.ts).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type NativePackageName = '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node';

export interface NativeOption { pkg: NativePackageName; label: string; detail: string; recommended: boolean }

export interface MachineFacts { platform: NodeJS.Platform; arch: string; nvidiaDriver: boolean }

export function machineFacts(): MachineFacts {
  return { platform: process.platform, arch: process.arch, nvidiaDriver: fs.existsSync('/proc/driver/nvidia/version') };
}

/**
 * The packages that can run here, the fitting one first: tfjs-node-gpu exists for Linux x64 only (CUDA 11.2 and
 * cuDNN 8.1 installed separately), and is recommended where an NVIDIA driver is loaded; tfjs-node everywhere else.
 */
export function nativeOptions(m: MachineFacts = machineFacts()): NativeOption[] {
  const cpu: NativeOption = {
    pkg: '@tensorflow/tfjs-node', label: '@tensorflow/tfjs-node', recommended: false,
    detail: 'Native TensorFlow on the CPU (Linux x64/arm64, macOS, Windows x64). Downloads libtensorflow, about 100 MB.',
  };
  if (m.platform !== 'linux' || m.arch !== 'x64') return [{ ...cpu, recommended: true }];
  const gpu: NativeOption = {
    pkg: '@tensorflow/tfjs-node-gpu', label: '@tensorflow/tfjs-node-gpu', recommended: m.nvidiaDriver,
    detail: 'Native TensorFlow with CUDA (Linux x64, an NVIDIA GPU, CUDA 11.2 and cuDNN 8.1 installed). Downloads libtensorflow, about 400 MB.',
  };
  return m.nvidiaDriver ? [gpu, cpu] : [{ ...cpu, recommended: true }, gpu];
}

/** An executable named `cmd` on PATH (npm.cmd and the like on Windows), or undefined. */
export function findOnPath(cmd: string, env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string | undefined {
  const pathVar = env.PATH ?? env.Path ?? '';
  const exts = platform === 'win32' ? (env.PATHEXT ?? '.COM;.EXE;.BAT;.CMD').split(';').filter(Boolean) : [''];
  for (const dir of pathVar.split(platform === 'win32' ? ';' : ':').filter(Boolean)) {
    for (const ext of exts) {
      const file = path.join(dir, cmd + ext.toLowerCase());
      try {
        fs.accessSync(file, platform === 'win32' ? fs.constants.F_OK : fs.constants.X_OK);
        if (fs.statSync(file).isFile()) return file;
      } catch { /* not here */ }
    }
  }
  return undefined;
}

/** A failed install: the message says what failed and why; `output` is npm's whole output, for the log. */
export class NativeInstallError extends Error {
  constructor(message: string, readonly output = '') {
    super(message);
    this.name = 'NativeInstallError';
  }
}

export interface NpmInstallRequest {
  /** The folder the backend is to live in; npm installs into a staging folder beside it. */
  dir: string;
  /** What npm installs: `@tensorflow/tfjs-node@4.22.0`, or a tarball (the tests' stand-in). */
  spec: string;
  npm: string;
  onLine?(line: string): void;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
}

/** The lines of npm's output that say why it failed, without npm's generic bookkeeping. */
export function telling(output: string): string {
  const lines = output.split('\n').map((l) => l.replace(/^npm (error|ERR!)\s*/, '').trim()).filter(Boolean);
  const generic = /^(code \S+|path |command |errno |A complete log|syscall |signal |Log files|$)/;
  const errors = lines.filter((l) => /error|ENOTFOUND|EACCES|ETIMEDOUT|E404|not found|failed/i.test(l) && !generic.test(l));
  const pick = (errors.length ? errors : lines.filter((l) => !generic.test(l))).slice(-3);
  return pick.join(' / ').slice(0, 600);
}

/**
 * Runs `npm install <spec>` into a new staging folder beside `dir` and returns that folder. The staging folder is
 * removed when npm fails or is cancelled; `dir` itself is not touched (see commitInstall).
 */
export async function npmInstall(req: NpmInstallRequest): Promise<string> {
  const staging = `${req.dir}.install-${process.pid}-${Date.now()}`;
  fs.mkdirSync(staging, { recursive: true });
  fs.writeFileSync(path.join(staging, 'package.json'), `${JSON.stringify({
    name: 'domlora-native-backend', private: true,
    description: 'The native TensorFlow backend, installed by "DomLoRA: Install Native Backend…"; the DomLoRA worker loads it from here.',
  }, null, 2)}\n`);
  const args = ['install', req.spec, '--save-exact', '--omit=dev', '--no-audit', '--no-fund', '--foreground-scripts', '--prefix', staging];
  let output = '';
  try {
    const code = await new Promise<number | string>((resolve, reject) => {
      const win = process.platform === 'win32';
      // npm is npm.cmd on Windows, which only a shell runs; the arguments are quoted for it.
      const child = spawn(win ? `"${req.npm}"` : req.npm, win ? args.map((a) => `"${a}"`) : args, {
        cwd: staging, env: { ...process.env, ...req.env }, shell: win, detached: !win, stdio: ['ignore', 'pipe', 'pipe'],
      });
      const onAbort = () => {
        try { if (win) child.kill(); else process.kill(-child.pid!, 'SIGTERM'); } catch { /* already gone */ }
      };
      req.signal?.addEventListener('abort', onAbort, { once: true });
      let partial = '';
      const onData = (d: Buffer) => {
        const text = d.toString('utf8');
        output += text;
        const lines = (partial + text).split(/\r?\n|\r/);
        partial = lines.pop() ?? '';
        for (const l of lines) if (l.trim()) req.onLine?.(l);
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('error', (e) => reject(new NativeInstallError(`could not run npm (${req.npm}): ${e.message}`, output)));
      child.on('close', (c, signal) => {
        req.signal?.removeEventListener('abort', onAbort);
        if (partial.trim()) req.onLine?.(partial);
        resolve(c ?? signal ?? 'unknown');
      });
    });
    if (req.signal?.aborted) throw new NativeInstallError('cancelled', output);
    if (code !== 0) {
      throw new NativeInstallError(`npm install ${req.spec} failed (exit code ${code}): ${telling(output) || 'npm gave no reason'}`, output);
    }
    return staging;
  } catch (e) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw e;
  }
}

/** Moves a verified staging folder to `dir`, replacing an earlier install (restored should the move fail). */
export function commitInstall(staging: string, dir: string): void {
  const old = fs.existsSync(dir) ? `${dir}.old-${process.pid}-${Date.now()}` : undefined;
  if (old) fs.renameSync(dir, old);
  try {
    fs.renameSync(staging, dir);
  } catch (e) {
    if (old) fs.renameSync(old, dir);
    throw e;
  }
  if (old) fs.rmSync(old, { recursive: true, force: true });
}
