// "DomLoRA: Install Native Backend…": installs @tensorflow/tfjs-node-gpu (Linux x64 with CUDA) or
// @tensorflow/tfjs-node into the extension's global storage with the user's npm, checks that a worker starts on it,
// and only then puts it in place; the worker loads it from there (ctx.nativeDir). Refused in Restricted Mode: it runs
// npm and the package's install script. Whatever fails, the install in place (if any) and the backend in use stay.
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { shellFor, shellWord, withEnv } from '../protocol/shell';
import type { CommandFactory, Ctx } from './ctx';
import { commitInstall, findOnPath, NativeInstallError, nativeOptions, npmInstall, type NativePackageName } from './native';
import * as notify from './notify';
import { JobError, WorkerClient, type ReadyInfo } from './worker';

/** From another command or a test: which package, and what npm installs (a tarball instead of the registry's). */
export interface NativeInstallOptions { package?: NativePackageName; spec?: string }

export type NativeInstallResult =
  | { ok: true; dir: string; backend: ReadyInfo }
  | { ok: false; reason: 'restricted' | 'busy' | 'no-npm' | 'npm-failed' | 'does-not-load' | 'cancelled' | 'not-moved'; message: string };

/** The tfjs version the worker runs: the native package must be built for exactly this one. */
function tfjsVersion(ctx: Ctx): string {
  const deps = (ctx.extension.extension.packageJSON as { dependencies?: Record<string, string> }).dependencies ?? {};
  return deps['@tensorflow/tfjs-core'] ?? '4.22.0';
}

async function pickPackage(): Promise<NativePackageName | undefined> {
  const items = nativeOptions().map((o) => ({ label: o.label, detail: o.detail, description: o.recommended ? 'recommended here' : undefined, pkg: o.pkg }));
  const picked = await vscode.window.showQuickPick(items, {
    title: 'DomLoRA: install the native TensorFlow backend',
    placeHolder: 'npm installs it into DomLoRA\'s storage; jobs use it when domlora.backend is auto or tensorflow',
  });
  return picked?.pkg;
}

function fail(ctx: Ctx, result: Extract<NativeInstallResult, { ok: false }>, ...actions: { title: string; run: () => unknown }[]): NativeInstallResult {
  ctx.log(`[host] native backend: ${result.reason}: ${result.message}`);
  notify.error(result.message, ...actions);
  return result;
}

export const installNativeBackend: CommandFactory = (ctx) => async (opts: NativeInstallOptions = {}): Promise<NativeInstallResult | undefined> => {
  if (!ctx.isTrusted()) {
    return fail(ctx, {
      ok: false, reason: 'restricted',
      message: 'DomLoRA: installing the native backend runs npm and the package\'s install script, so it is not available in '
        + 'Restricted Mode. Trust this workspace first.',
    }, { title: 'Manage Workspace Trust', run: () => vscode.commands.executeCommand('workbench.trust.manage') });
  }
  if (ctx.jobs.running) {
    const r = ctx.jobs.running;
    return fail(ctx, { ok: false, reason: 'busy', message: `DomLoRA is running a ${r.kind} on ${r.model}: install the native backend when it is done.` });
  }
  const pkg = opts.package ?? await pickPackage();
  if (!pkg) return undefined;
  const version = tfjsVersion(ctx);
  const spec = opts.spec ?? `${pkg}@${version}`;
  const dir = ctx.nativeDir;
  const npm = findOnPath('npm');
  // Printed for the shell of this platform (PowerShell on Windows), the storage path quoted as one word.
  const shell = shellFor(process.platform);
  const manual = `npm install --prefix ${shellWord(dir, shell)} ${shellWord(`${pkg}@${version}`, shell)}`;
  if (!npm) {
    return fail(ctx, {
      ok: false, reason: 'no-npm',
      message: `DomLoRA: installing ${pkg} needs npm, and VS Code finds none on its PATH. Install Node.js (it comes with npm) and `
        + `restart VS Code, or run in a terminal: ${manual}`,
    }, { title: 'Copy Command', run: () => vscode.env.clipboard.writeText(manual) });
  }
  const before = ctx.worker.backend ?? ctx.rememberedBackend()?.backend;
  const keeps = `DomLoRA keeps ${fs.existsSync(dir) ? 'the native backend installed before' : `running on ${before ?? 'wasm'}`}.`;
  ctx.log(`[host] native backend: ${npm} install ${spec} into ${dir}`);
  const controller = new AbortController();
  return vscode.window.withProgress({
    location: vscode.ProgressLocation.Notification, title: `DomLoRA: installing ${pkg}`, cancellable: true,
  }, async (progress, token): Promise<NativeInstallResult> => {
    token.onCancellationRequested(() => controller.abort());
    progress.report({ message: `npm install ${spec} (it downloads libtensorflow)…` });
    let staging: string;
    try {
      staging = await npmInstall({
        dir, spec, npm, signal: controller.signal,
        onLine: (line) => { ctx.log(`[npm] ${line}`); progress.report({ message: line.slice(0, 120) }); },
      });
    } catch (e) {
      if (controller.signal.aborted) return fail(ctx, { ok: false, reason: 'cancelled', message: `DomLoRA: the install of ${pkg} was cancelled. ${keeps}` });
      const msg = e instanceof NativeInstallError ? e.message : String(e);
      return fail(ctx, { ok: false, reason: 'npm-failed', message: `DomLoRA: installing ${pkg} failed: ${msg}. ${keeps}` },
        { title: 'Show Log', run: () => ctx.output.show() });
    }
    // The proof that it works: a worker that starts on it. Only then does it replace what was there.
    progress.report({ message: 'checking that a worker starts on it…' });
    const check = new WorkerClient({
      script: ctx.workerScript, backend: () => 'tensorflow', env: () => ({ DOMLORA_NATIVE_DIR: staging }),
      log: (line) => ctx.log(`[native check] ${line}`),
    });
    let ready: ReadyInfo;
    try {
      ready = await check.start();
    } catch (e) {
      fs.rmSync(staging, { recursive: true, force: true });
      const msg = e instanceof JobError ? e.message : String(e);
      return fail(ctx, { ok: false, reason: 'does-not-load', message: `DomLoRA: ${pkg} installed, but a worker does not start on it: ${msg}. Nothing was changed; ${keeps}` },
        { title: 'Show Log', run: () => ctx.output.show() });
    } finally {
      check.dispose();
    }
    try {
      ctx.worker.restartWhenIdle();
      commitInstall(staging, dir);
    } catch (e) {
      fs.rmSync(staging, { recursive: true, force: true });
      return fail(ctx, { ok: false, reason: 'not-moved', message: `DomLoRA: ${pkg} works, but could not be moved to ${dir}: ${String(e)}. ${keeps}` });
    }
    ctx.worker.restartWhenIdle();
    const setting = vscode.workspace.getConfiguration('domlora').get<string>('backend', 'auto');
    const uses = setting === 'auto' || setting === 'tensorflow'
      ? 'The next job runs on it.'
      : `Jobs use it when the setting domlora.backend is "auto" or "tensorflow" (it is "${setting}").`;
    // "tensorflow (@tensorflow/tfjs-node 4.22.0 from DIR)", without the list of what was skipped.
    const detail = (ready.detail ?? ready.backend).split(staging).join(dir).split(' (skipped: ')[0];
    ctx.log(`[host] native backend installed in ${dir}: ${detail}`);
    notify.info(`DomLoRA: ${pkg} is installed in ${dir} and works (${detail}). ${uses} `
      + `The CLI uses it with ${withEnv({ DOMLORA_NATIVE_DIR: dir }, 'domlora …', shell)}`);
    return { ok: true, dir, backend: { ...ready, detail } };
  });
};
