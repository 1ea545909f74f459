// The commands, each a `(ctx) => handler` factory. A handler asks only for what it cannot find, runs one worker job
// through ctx.jobs, keeps the model's state in ctx.models (its panel follows), and reports the outcome through
// notify. Handlers return their result (or undefined when the user stopped or an error was shown) so the host tests
// can drive them with `executeCommand`.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { moduleLabel, type CheckParams, type CheckResult, type CompareResult, type ExportParams, type ProbeParams, type ProbeReport, type TrainParams } from '../protocol/messages';
import type { CheckView, ComparisonView, Preset, RunView } from '../protocol/webview';
import { readSettings, settingValue, type Settings } from './config';
import type { CommandFactory, Ctx } from './ctx';
import * as notify from './notify';
import { modelUriOf, pickAndProbe, type ModelsNode } from './modelsView';
import { ensureFolder, isModelFolder, modelName, readReport } from './store';
import { MANAGE_TRUST } from './trust';
import { JobError } from './worker';

export interface ProbeOptions { data?: string; samples?: number; seqLen?: number; out?: string }
export interface TrainOptions { preset?: Preset; module?: string; data?: string; out?: string; steps?: number }
export interface ExportOptions { preset?: Preset; format?: ExportParams['format']; out?: string }
export interface CheckOptions { seeds?: number; resume?: boolean; placements?: string[]; data?: string; out?: string; steps?: number }
export interface CompareOptions { reports?: string[] }

const PROBE_REQUIREMENTS = 'A model folder holds a Hugging Face config.json, the weights (model.safetensors) and tokenizer.json.';

// ---- Resolving what a command works on --------------------------------------------------------------------------

/** Turns the command's argument into a model folder path, or explains why it is not one. */
export async function resolveModelFolder(ctx: Ctx, arg: unknown, purpose: string): Promise<string | undefined> {
  // A URI from the Explorer or a caller, or an element of the Models view.
  let uri = modelUriOf(arg);
  if (!uri) {
    uri = await pickModelFolder(ctx, purpose);
    if (!uri) return undefined;
  }
  if (uri.scheme !== 'file') {
    notify.error(`DomLoRA works on folders on disk; ${uri.toString()} is not one.`);
    return undefined;
  }
  let dir = uri.fsPath;
  try {
    // Right-clicking config.json itself means its folder.
    if (fs.statSync(dir).isFile()) dir = path.dirname(dir);
  } catch {
    notify.error(`DomLoRA: ${dir} does not exist.`);
    return undefined;
  }
  if (!isModelFolder(dir)) {
    notify.error(`"${path.basename(dir)}" is not a model folder: it has no config.json. ${PROBE_REQUIREMENTS} `
      + `Pick the folder that holds the model's config.json.`);
    return undefined;
  }
  const resolved = path.resolve(dir);
  return refuseRestricted(ctx, resolved, 'the model folder') ? undefined : resolved;
}

/** In Restricted Mode, a path outside the workspace and the extension's storage is refused, saying why (trust.ts). */
export function refuseRestricted(ctx: Ctx, p: string, what: string): boolean {
  const why = ctx.restriction(p, what);
  if (why) notify.warn(why, MANAGE_TRUST);
  return why !== undefined;
}

async function pickModelFolder(ctx: Ctx, purpose: string): Promise<vscode.Uri | undefined> {
  await ctx.modelFolders.ready;
  type Item = vscode.QuickPickItem & { uri?: vscode.Uri };
  const active = ctx.panels.activeModel();
  const found = ctx.modelFolders.list();
  const items: Item[] = found.map((u) => ({
    label: `$(folder) ${path.basename(u.fsPath)}`,
    description: vscode.workspace.asRelativePath(u, true),
    uri: u,
  }));
  if (active) {
    const i = items.findIndex((it) => it.uri && path.resolve(it.uri.fsPath) === active);
    if (i > 0) items.unshift(...items.splice(i, 1));
  }
  items.push({ label: '$(folder-opened) Choose a folder…', description: 'any folder on disk' });
  const picked = await vscode.window.showQuickPick(items, {
    title: `DomLoRA: the model to ${purpose}`,
    placeHolder: found.length ? 'Model folders in this workspace (folders with a Hugging Face config.json)' : 'No model folder found in the workspace: choose one',
    matchOnDescription: true,
  });
  if (!picked) return undefined;
  if (picked.uri) return picked.uri;
  const chosen = await vscode.window.showOpenDialog({
    canSelectFolders: true, canSelectFiles: false, canSelectMany: false, openLabel: 'Use this model',
    title: 'DomLoRA: choose the model folder (the one holding config.json)',
    defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
  });
  return chosen?.[0];
}

/** Files that are never datasets: model and tool configs. */
const NOT_DATA = /(^|[\\/])(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|adapter_config|package|package-lock|tsconfig|jsconfig|settings|launch|tasks|extensions|vocab|added_tokens|preprocessor_config|trainer_state|training_args)\.json$|\.index\.json$|(^|[\\/])probe-[^\\/]*\.json$/i;

/** The dataset for a job: the setting, else the user's pick (the last one used for this model first). */
export async function pickDataset(ctx: Ctx, modelDir: string, settings: Settings, purpose: string): Promise<string | undefined> {
  if (settings.dataset) return settings.dataset;
  type Item = vscode.QuickPickItem & { file?: string };
  const last = ctx.store.lastDataset(modelDir);
  const items: Item[] = [];
  if (last && fs.existsSync(last)) {
    items.push({ label: `$(history) ${path.basename(last)}`, description: displayPath(last), detail: 'last used for this model', file: last });
  }
  const files = await vscode.workspace.findFiles('**/*.{json,jsonl,txt}', '**/{node_modules,.git,.domlora,.vscode,.vscode-test}/**', 500);
  const candidates = files.filter((f) => f.scheme === 'file' && !NOT_DATA.test(f.fsPath) && f.fsPath !== last)
    .sort((a, b) => a.fsPath.localeCompare(b.fsPath));
  if (candidates.length) items.push({ label: 'in this workspace', kind: vscode.QuickPickItemKind.Separator });
  for (const f of candidates) {
    items.push({ label: `$(file) ${path.basename(f.fsPath)}`, description: vscode.workspace.asRelativePath(f, true), file: f.fsPath });
  }
  items.push({ label: '', kind: vscode.QuickPickItemKind.Separator });
  items.push({ label: '$(folder-opened) Browse…', description: 'a JSON or JSONL file anywhere' });
  const picked = await vscode.window.showQuickPick(items, {
    title: `DomLoRA: the dataset to ${purpose} ${modelName(modelDir)}`,
    placeHolder: 'JSON or JSONL: alpaca (instruction/input/output), sharegpt or chat messages, or plain text',
    matchOnDescription: true,
  });
  if (!picked) return undefined;
  let file = picked.file;
  if (!file) {
    const chosen = await vscode.window.showOpenDialog({
      canSelectFiles: true, canSelectFolders: false, canSelectMany: false, openLabel: 'Use this dataset',
      title: 'DomLoRA: choose the dataset', filters: { 'Datasets': ['json', 'jsonl', 'txt'], 'All files': ['*'] },
      defaultUri: last ? vscode.Uri.file(path.dirname(last)) : vscode.workspace.workspaceFolders?.[0]?.uri,
    });
    if (!chosen?.[0]) return undefined;
    file = chosen[0].fsPath;
  }
  await ctx.store.setLastDataset(modelDir, file);
  return file;
}

function displayPath(file: string): string {
  return vscode.workspace.getWorkspaceFolder(vscode.Uri.file(file)) ? vscode.workspace.asRelativePath(file, true) : file;
}

function checkDataset(ctx: Ctx, file: string): boolean {
  if (refuseRestricted(ctx, file, 'the dataset')) return false;
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
    notify.error(`DomLoRA: the dataset ${file} does not exist. Check the setting domlora.dataset or pick another file.`);
    return false;
  }
  return true;
}

/** Makes the folder the `domlora.adapterDirectory` setting names, if it names one; false, after an error naming the
 * setting and the path, when it cannot be a folder. */
function prepareAdapterDirectory(ctx: Ctx, settings: Settings, scope: vscode.Uri): boolean {
  const raw = settingValue(vscode.workspace.getConfiguration('domlora', scope), 'adapterDirectory', '', ctx.isTrusted()).trim();
  if (!raw) return true;
  const openSetting = { title: 'Open Settings', run: () => vscode.commands.executeCommand('workbench.action.openSettings', 'domlora.adapterDirectory') };
  const dir = settings.adapterDirectory;
  if (dir && refuseRestricted(ctx, dir, 'the folder of the setting domlora.adapterDirectory,')) return false;
  if (!dir) {
    notify.error(`DomLoRA: the setting domlora.adapterDirectory is the relative path "${raw}", but no workspace folder is open `
      + 'to resolve it against. Use an absolute path. Nothing was trained.', openSetting);
    return false;
  }
  const why = ensureFolder(dir);
  if (why) {
    notify.error(`DomLoRA: cannot put adapters in ${dir}, the folder of the setting domlora.adapterDirectory: ${why}. `
      + 'Change the setting or move what is in the way. Nothing was trained.', openSetting);
    return false;
  }
  return true;
}

/** Tells the user how a job ended badly, with the action that helps. */
export function reportJobError(ctx: Ctx, what: string, model: string, err: unknown): void {
  const e = err instanceof JobError ? err : new JobError('internal', err instanceof Error ? err.message : String(err));
  ctx.log(`[host] ${what} of ${model} failed: ${e.code}: ${e.message}`);
  switch (e.code) {
    case 'cancelled':
      notify.info(`DomLoRA: the ${what} of ${model} was cancelled. Nothing was written.`);
      return;
    case 'bad-input':
      notify.error(`DomLoRA: ${e.message}`, ...(e.file && fs.existsSync(e.file)
        ? [{ title: 'Open File', run: () => vscode.window.showTextDocument(vscode.Uri.file(e.file!)) }] : []));
      return;
    case 'out-of-memory':
      notify.error(`DomLoRA: ${e.message}`, { title: 'Open Settings', run: () => vscode.commands.executeCommand('workbench.action.openSettings', 'domlora.') });
      return;
    default:
      notify.error(`DomLoRA: the ${what} of ${model} failed: ${e.message}`, { title: 'Show Log', run: () => ctx.output.show() });
  }
}

// ---- Commands ---------------------------------------------------------------------------------------------------

/** One job at a time: says so (with a way to cancel the running one) and returns true when another job runs. */
function refuseWhileBusy(ctx: Ctx): boolean {
  const running = ctx.jobs.running;
  if (!running) return false;
  notify.warn(`DomLoRA is already running a ${running.kind} on ${running.model}. Wait for it or cancel it first.`,
    { title: 'Cancel It', run: () => ctx.jobs.cancel() });
  return true;
}

export const runProbe: CommandFactory = (ctx) => async (uri?: vscode.Uri | ModelsNode, opts: ProbeOptions = {}) => {
  const modelDir = await resolveModelFolder(ctx, uri, 'probe');
  if (!modelDir) return undefined;
  const model = modelName(modelDir);
  if (refuseWhileBusy(ctx)) return undefined;
  const settings = readSettings(vscode.Uri.file(modelDir), ctx.isTrusted());
  if (opts.out && refuseRestricted(ctx, opts.out, 'the report')) return undefined;
  const data = opts.data ?? await pickDataset(ctx, modelDir, settings, 'probe');
  if (!data || !checkDataset(ctx, data)) return undefined;
  const out = opts.out ?? ctx.store.newReportPath(modelDir);
  const params: ProbeParams = {
    modelDir, data, out, samples: opts.samples ?? settings.samples, seqLen: opts.seqLen ?? settings.seqLen,
    rank: settings.rank, alpha: settings.alpha, backend: settings.backend, gpuMemoryGiB: settings.gpuMemoryGiB,
    // The report goes under the workspace folder (or the storage) through real folders only: a link planted in a
    // cloned .domlora/ does not send it elsewhere.
    ...(opts.out ? {} : { outRoot: ctx.store.dataRoot(modelDir) }),
  };
  ctx.models.setJob(modelDir, { kind: 'probe' });
  try {
    const report = await ctx.jobs.run({ kind: 'probe', model, title: `DomLoRA: PAGE probe of ${model}` }, 'probe', params,
      (p) => ctx.models.jobProgress(modelDir, p));
    ctx.models.setJob(modelDir, undefined);
    ctx.models.setReport(modelDir, report, out);
    ctx.panels.show(modelDir);
    return { reportPath: out, report };
  } catch (err) {
    ctx.models.setJob(modelDir, undefined);
    reportJobError(ctx, 'probe', model, err);
    return undefined;
  }
};

/** Trainable parameters of a LoRA adapter of rank r on the given modules (r (d_in + d_out) each). */
export function adapterParams(report: ProbeReport | undefined, targets: string[] | 'all', rank: number): number | undefined {
  if (!report) return undefined;
  const mods = targets === 'all' ? report.modules : report.modules.filter((m) => targets.includes(m.name));
  return mods.reduce((s, m) => s + rank * (m.dIn + m.dOut), 0);
}

export const train: CommandFactory = (ctx) => async (uri?: vscode.Uri | ModelsNode, opts: TrainOptions = {}) => {
  const preset: Preset = opts.preset ?? 'domlora';
  const modelDir = modelUriOf(uri) ? await resolveModelFolder(ctx, uri, 'train')
    : ctx.panels.activeModel() ?? await resolveModelFolder(ctx, undefined, 'train');
  if (!modelDir || refuseRestricted(ctx, modelDir, 'the model folder')) return undefined;
  const model = modelName(modelDir);
  if (refuseWhileBusy(ctx)) return undefined;
  const rep = ctx.models.report(modelDir);
  let targets: string[] | undefined;
  if (preset === 'domlora') {
    const module = opts.module ?? ctx.models.placement(modelDir).module;
    if (!module) {
      notify.error(`DomLoRA: there is no PAGE probe of ${model} yet, so there is no module to train. `
        + 'Run the probe first: it measures where the adapter belongs.',
      { title: 'Run PAGE Probe', run: () => vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(modelDir)) });
      return undefined;
    }
    targets = [module];
  }
  const settings = readSettings(vscode.Uri.file(modelDir), ctx.isTrusted());
  if (opts.out && refuseRestricted(ctx, opts.out, 'the adapter folder')) return undefined;
  // The adapter folder of the setting is made before anything is asked or run, so a bad one costs nothing.
  if (!opts.out && !prepareAdapterDirectory(ctx, settings, vscode.Uri.file(modelDir))) return undefined;
  let data = opts.data ?? settings.dataset;
  // The report's dataset is used unasked only where Restricted Mode would allow it (a report can be planted).
  const reported = rep?.report.config.dataset;
  if (!data && reported && fs.existsSync(reported) && !ctx.restriction(reported, 'the dataset')) data = reported;
  data ??= await pickDataset(ctx, modelDir, settings, 'train');
  if (!data || !checkDataset(ctx, data)) return undefined;
  const out = opts.out ?? ctx.store.newAdapterDir(modelDir, preset, settings.adapterDirectory);
  const outRoot = opts.out ? undefined : settings.adapterDirectory ?? ctx.store.dataRoot(modelDir);
  const steps = opts.steps ?? settings.steps;
  const params: TrainParams = {
    modelDir, data, preset, out, ...(outRoot ? { outRoot } : {}), rank: settings.rank, alpha: settings.alpha, lr: settings.learningRate, steps,
    backend: settings.backend, gpuMemoryGiB: settings.gpuMemoryGiB, seqLen: settings.seqLen,
    ...(targets ? { targets } : {}),
    ...(rep ? { fromReport: rep.path } : {}),
  };
  const run: RunView = {
    preset, status: 'running', targets: targets ?? [], steps, startedAt: new Date().toISOString(), curve: [],
    trainableParams: adapterParams(rep?.report, targets ?? 'all', settings.rank),
  };
  ctx.panels.show(modelDir, true);
  ctx.models.startRun(modelDir, run);
  ctx.models.setJob(modelDir, { kind: 'train', preset });
  const label = preset === 'domlora' ? `DomLoRA at ${moduleLabel(targets![0], rep?.report)}` : 'vanilla LoRA (all modules)';
  try {
    const result = await ctx.jobs.run({ kind: 'train', preset, model, title: `DomLoRA: training ${label} on ${model}` }, 'train', params,
      (p) => { ctx.models.jobProgress(modelDir, p); ctx.models.runProgress(modelDir, preset, p); });
    const done: RunView = {
      ...run, status: 'done', result, curve: result.curve.length ? result.curve : run.curve,
      targets: result.targets, trainableParams: result.trainableParams, etaSeconds: undefined,
    };
    ctx.models.setJob(modelDir, undefined);
    await ctx.models.endRun(modelDir, done);
    const before = result.evalLossBefore ?? result.trainLossFirst;
    const after = result.evalLossAfter ?? result.trainLossLast;
    const lossText = before !== undefined && after !== undefined ? ` Loss ${before.toFixed(3)} → ${after.toFixed(3)}.` : '';
    notify.info(`DomLoRA: trained ${label}: ${result.trainableParams.toLocaleString('en-US')} trainable parameters.${lossText}`,
      { title: 'Reveal Adapter', run: () => revealPath(result.adapterDir) });
    return result;
  } catch (err) {
    const cancelled = err instanceof JobError && err.code === 'cancelled';
    // The folder reserved in domlora.adapterDirectory goes again if the run wrote nothing to it (rmdir: only empty).
    if (!opts.out && settings.adapterDirectory) { try { fs.rmdirSync(out); } catch { /* it holds a checkpoint */ } }
    ctx.models.setJob(modelDir, undefined);
    await ctx.models.endRun(modelDir, { ...run, status: cancelled ? 'cancelled' : 'failed', error: err instanceof Error ? err.message : String(err), etaSeconds: undefined });
    reportJobError(ctx, 'training', model, err);
    return undefined;
  }
};

export const trainVanilla: CommandFactory = () => (uri?: vscode.Uri | ModelsNode, opts: TrainOptions = {}) =>
  vscode.commands.executeCommand('domlora.train', uri, { ...opts, preset: 'vanilla' });

export const showHeatmap: CommandFactory = (ctx) => async (uri?: vscode.Uri | ModelsNode) => {
  let modelDir: string | undefined;
  if (modelUriOf(uri)) {
    modelDir = await resolveModelFolder(ctx, uri, 'show');
  } else {
    modelDir = ctx.panels.activeModel() ?? ctx.store.lastModel();
    if (!modelDir || !fs.existsSync(modelDir)) modelDir = await resolveModelFolder(ctx, undefined, 'show the PAGE heatmap of');
  }
  if (!modelDir || refuseRestricted(ctx, modelDir, 'the model folder')) return undefined;
  const rep = ctx.models.report(modelDir);
  if (!rep) {
    notify.info(`DomLoRA: there is no PAGE report for ${modelName(modelDir)} yet.`,
      { title: 'Run PAGE Probe', run: () => vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(modelDir!)) });
    return undefined;
  }
  return ctx.panels.show(modelDir).panel;
};

export const cancel: CommandFactory = (ctx) => () => {
  const running = ctx.jobs.running;
  if (!ctx.jobs.cancel()) {
    notify.info('DomLoRA: nothing is running.');
    return false;
  }
  ctx.log(`[host] cancel requested for the ${running?.kind} of ${running?.model}`);
  return true;
};

/** The status bar's click: the panel of the running job's model, else the last one. */
export const revealPanel: CommandFactory = (ctx) => () => {
  const running = ctx.jobs.running;
  const modelDir = ctx.panels.activeModel() ?? ctx.store.lastModel();
  if (modelDir && ctx.panels.get(modelDir)) { ctx.panels.show(modelDir); return; }
  if (running) { ctx.output.show(true); return; }
  return vscode.commands.executeCommand('domlora.showHeatmap');
};

export const showLog: CommandFactory = (ctx) => () => ctx.output.show();

/** The Models view's refresh button. */
export const refreshModels: CommandFactory = (ctx) => () => ctx.modelsView.refresh(true);

/** "DomLoRA: Probe a Model…": the Models view's list in a quick pick; the pick is probed (options as runProbe's). */
export const probeModel: CommandFactory = (ctx) => (opts?: ProbeOptions) => pickAndProbe(ctx.modelsView, opts);

/** Export targets. The adapter folder itself is already a PEFT adapter; these carry the placement elsewhere. */
const EXPORT_FORMATS: { format: ExportParams['format']; label: string; detail: string; file: (adapter: string) => string }[] = [
  { format: 'merged', label: 'Merged model', detail: 'The base model with the adapter folded into its weights: a plain Hugging Face folder', file: (a) => `${path.basename(a)}-merged` },
  { format: 'peft-config', label: 'PEFT LoraConfig (Python)', detail: 'A LoraConfig with the same target module, to train at scale with transformers + peft', file: () => 'lora_config.py' },
  { format: 'axolotl', label: 'Axolotl config (YAML)', detail: 'An Axolotl config that trains LoRA at the same module on GPUs', file: () => 'axolotl.yaml' },
  { format: 'llamafactory', label: 'LLaMA-Factory config (YAML)', detail: 'A LLaMA-Factory config that trains LoRA at the same module', file: () => 'llamafactory.yaml' },
  { format: 'mlx', label: 'MLX-LM config (YAML)', detail: 'An mlx_lm.lora config for Apple silicon', file: () => 'mlx_lora.yaml' },
];

export const exportAdapter: CommandFactory = (ctx) => async (uri?: vscode.Uri | ModelsNode, opts: ExportOptions = {}) => {
  const modelDir = modelUriOf(uri) ? await resolveModelFolder(ctx, uri, 'export')
    : ctx.panels.activeModel() ?? await resolveModelFolder(ctx, undefined, 'export');
  if (!modelDir || refuseRestricted(ctx, modelDir, 'the model folder')) return undefined;
  const model = modelName(modelDir);
  const runs = ctx.store.runs(modelDir);
  const run = (opts.preset ? runs[opts.preset] : undefined) ?? runs.domlora ?? runs.vanilla;
  const adapterDir = run?.result?.adapterDir;
  if (!adapterDir || !fs.existsSync(adapterDir)) {
    notify.error(`DomLoRA: there is no trained adapter of ${model} to export yet. Train DomLoRA first.`,
      { title: 'Train DomLoRA', run: () => vscode.commands.executeCommand('domlora.train', vscode.Uri.file(modelDir)) });
    return undefined;
  }
  let format = opts.format;
  if (!format) {
    const picked = await vscode.window.showQuickPick(EXPORT_FORMATS.map((f) => ({ label: f.label, detail: f.detail, format: f.format })), {
      title: `DomLoRA: export the ${run!.preset === 'domlora' ? 'DomLoRA' : 'vanilla LoRA'} adapter of ${model}`,
      placeHolder: `${path.basename(adapterDir)} is already a PEFT adapter folder; export it as…`,
    });
    if (!picked) return undefined;
    format = picked.format;
  }
  let out = opts.out;
  if (!out) {
    const name = EXPORT_FORMATS.find((f) => f.format === format)?.file(adapterDir) ?? `${path.basename(adapterDir)}-${format}`;
    const suggested = vscode.Uri.file(path.join(adapterDir, '..', `export-${path.basename(adapterDir)}`, name));
    const chosen = await vscode.window.showSaveDialog({ defaultUri: suggested, saveLabel: 'Export', title: 'DomLoRA: export to' });
    if (!chosen) return undefined;
    out = chosen.fsPath;
  }
  if (refuseRestricted(ctx, adapterDir, 'the adapter') || refuseRestricted(ctx, out, 'the export')) return undefined;
  // The user chose the file; the export replaces it only as itself, never through a link in its place.
  const params: ExportParams = { adapterDir, format, out, modelDir, force: true, outRoot: path.dirname(out) };
  try {
    const result = await ctx.jobs.run({ kind: 'export', model, title: `DomLoRA: exporting ${model} (${format})` }, 'export', params);
    for (const line of result.text.split('\n')) if (line.trim()) ctx.log(`[export] ${line}`);
    for (const w of result.warnings) ctx.log(`[export] warning: ${w}`);
    notify.info(`DomLoRA: exported ${format} to ${displayPath(out)}.${result.warnings.length ? ` ${result.warnings.length} warning(s) in the log.` : ''}`,
      { title: 'Reveal', run: () => revealPath(out!) }, { title: 'Show Log', run: () => ctx.output.show() });
    return result;
  } catch (err) {
    reportJobError(ctx, 'export', model, err);
    return undefined;
  }
};

function revealPath(p: string): Thenable<unknown> {
  const uri = vscode.Uri.file(p);
  return vscode.commands.executeCommand(vscode.workspace.getWorkspaceFolder(uri) ? 'revealInExplorer' : 'revealFileInOS', uri);
}

// ---- The placement check and the comparison of datasets -------------------------------------------------------

/** Runs finished and planned in a check's state file, or undefined when the folder holds none (nothing to resume). */
export function checkProgressOnDisk(dir: string): { finished: number; total: number } | undefined {
  try {
    const st = JSON.parse(fs.readFileSync(path.join(dir, 'check-state.json'), 'utf8'));
    const total = st.plan.placements.length * st.plan.seeds.length;
    return { finished: Object.keys(st.finished ?? {}).length, total };
  } catch {
    return undefined;
  }
}

/** The model a panel-side command works on: the one named, else the active panel's, else the user's pick. */
async function commandModel(ctx: Ctx, uri: unknown, purpose: string): Promise<string | undefined> {
  return modelUriOf(uri) ? resolveModelFolder(ctx, uri, purpose) : ctx.panels.activeModel() ?? resolveModelFolder(ctx, undefined, purpose);
}

/**
 * "Check Placement": trains one adapter per placement (the dominant module, the runner-up, the lowest, two random
 * modules of the dominant's kind, vanilla LoRA) with the training settings, and shows the loss reductions in the
 * panel. Asks for one seed or three (error bars), or to resume a check that stopped.
 */
export const checkPlacement: CommandFactory = (ctx) => async (uri?: vscode.Uri | ModelsNode, opts: CheckOptions = {}) => {
  const modelDir = await commandModel(ctx, uri, 'check the placement of');
  if (!modelDir) return undefined;
  const model = modelName(modelDir);
  if (refuseWhileBusy(ctx)) return undefined;
  const rep = ctx.models.report(modelDir);
  if (!rep) {
    notify.error(`DomLoRA: there is no PAGE probe of ${model} yet, so there is no placement to check. Run the probe first.`,
      { title: 'Run PAGE Probe', run: () => vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(modelDir)) });
    return undefined;
  }
  // The report shown may be one written elsewhere and since removed: the check reads it, so say so before any work.
  if (!fs.existsSync(rep.path)) {
    notify.error(`DomLoRA: the PAGE report of ${model} shown in the panel is no longer on disk (${displayPath(rep.path)}), so there is no placement to check. Run the probe again.`,
      { title: 'Run PAGE Probe', run: () => vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(modelDir)) });
    return undefined;
  }
  const last = ctx.models.check(modelDir);
  const stopped = last && (last.status === 'cancelled' || last.status === 'failed') ? checkProgressOnDisk(last.dir) : undefined;
  const resumable = stopped && stopped.finished < stopped.total ? stopped : undefined;
  let resume = Boolean(opts.resume);
  let seeds = opts.seeds;
  if (!resume && seeds === undefined) {
    type Item = vscode.QuickPickItem & { seeds?: number; resume?: boolean };
    const items: Item[] = [];
    if (resumable) items.push({ label: '$(debug-continue) Resume the stopped check', description: `${resumable.finished} of ${resumable.total} runs done`, resume: true });
    items.push(
      { label: '$(beaker) One seed', description: 'one adapter per placement: quicker, but no spread to tell a difference from noise', seeds: 1 },
      { label: '$(beaker) Three seeds', description: 'error bars over seeds 0, 1, 2: three times the training', seeds: 3 });
    const picked = await vscode.window.showQuickPick(items, {
      title: `DomLoRA: check the placement of ${model}`,
      placeHolder: 'Trains the dominant module, the runner-up, the lowest, two random modules of its kind and vanilla LoRA, each with the same budget',
    });
    if (!picked) return undefined;
    resume = Boolean(picked.resume);
    seeds = picked.seeds;
  }
  if (resume && !resumable) {
    notify.info(`DomLoRA: there is no stopped placement check of ${model} to resume.`);
    return undefined;
  }
  const settings = readSettings(vscode.Uri.file(modelDir), ctx.isTrusted());
  if (opts.out && refuseRestricted(ctx, opts.out, 'the check folder')) return undefined;
  let params: CheckParams;
  if (resume) {
    params = { modelDir, data: '', out: last!.dir, resume: last!.dir, backend: settings.backend, gpuMemoryGiB: settings.gpuMemoryGiB };
    seeds = last!.seeds;
  } else {
    let data = opts.data;
    if (!data && fs.existsSync(rep.report.config.dataset)) data = rep.report.config.dataset;
    data ??= settings.dataset ?? await pickDataset(ctx, modelDir, settings, 'check the placement of');
    if (!data || !checkDataset(ctx, data)) return undefined;
    params = {
      modelDir, data, report: rep.path, out: opts.out ?? ctx.store.newCheckDir(modelDir), ...(opts.out ? {} : { outRoot: ctx.store.dataRoot(modelDir) }),
      seeds, placements: opts.placements,
      rank: settings.rank, alpha: settings.alpha, lr: settings.learningRate, steps: opts.steps ?? settings.steps, seqLen: settings.seqLen,
      backend: settings.backend, gpuMemoryGiB: settings.gpuMemoryGiB,
    };
  }
  const view: CheckView = { status: 'running', dir: params.out, seeds: seeds ?? 1, startedAt: new Date().toISOString() };
  ctx.panels.show(modelDir, true);
  await ctx.models.setCheck(modelDir, view);
  ctx.models.setJob(modelDir, { kind: 'check' });
  try {
    const result = await ctx.jobs.run({ kind: 'check', model, title: `DomLoRA: placement check of ${model}` }, 'check', params,
      (p) => { ctx.models.jobProgress(modelDir, p); ctx.models.checkProgress(modelDir, p); });
    ctx.models.setJob(modelDir, undefined);
    await ctx.models.setCheck(modelDir, { ...view, status: 'done', result });
    for (const f of result.findings) ctx.log(`[check] ${f}`);
    notify.info(`DomLoRA: placement check of ${model} done. ${checkHeadline(result)}`,
      { title: 'Reveal Adapters', run: () => revealPath(path.join(result.dir, 'adapters')) }, { title: 'Show Log', run: () => ctx.output.show() });
    return result;
  } catch (err) {
    const cancelled = err instanceof JobError && err.code === 'cancelled';
    const counts = checkProgressOnDisk(params.out);
    ctx.models.setJob(modelDir, undefined);
    await ctx.models.setCheck(modelDir, { ...view, status: cancelled ? 'cancelled' : 'failed', error: err instanceof Error ? err.message : String(err),
      ...(counts ? { finishedRuns: counts.finished, totalRuns: counts.total } : {}) });
    if (cancelled && counts) {
      ctx.log(`[host] the placement check of ${model} was cancelled with ${counts.finished} of ${counts.total} runs finished`);
      notify.info(`DomLoRA: the placement check of ${model} was cancelled. The ${counts.finished} of ${counts.total} runs it finished are kept; ` +
        'resume it to train the rest.', { title: 'Resume', run: () => vscode.commands.executeCommand('domlora.checkPlacement', vscode.Uri.file(modelDir), { resume: true }) });
    } else {
      reportJobError(ctx, 'placement check', model, err);
    }
    return undefined;
  }
};

/** One sentence for the notification: where the dominant module ranks, and vanilla's reduction beside its own. */
export function checkHeadline(r: CheckResult): string {
  const dom = r.placements.find((p) => p.kind === 'dominant');
  const van = r.placements.find((p) => p.kind === 'vanilla');
  const parts: string[] = [];
  if (dom && r.correlation.dominantRank !== undefined) {
    parts.push(`The dominant module ranks ${r.correlation.dominantRank} of ${r.correlation.singles} single placements by loss reduction (${dom.reduction.mean.toFixed(3)})`);
  }
  if (van) parts.push(`vanilla LoRA ${van.reduction.mean.toFixed(3)}`);
  return parts.length ? `${parts.join('; ')}.` : '';
}

/**
 * "Compare Datasets…": probe reports of the model (on different data) compared pairwise: the dominant of each, the
 * rank correlation of their orderings, shown in the panel beside small heatmaps of each.
 */
export const compareDatasets: CommandFactory = (ctx) => async (uri?: vscode.Uri | ModelsNode, opts: CompareOptions = {}) => {
  const modelDir = await commandModel(ctx, uri, 'compare the reports of');
  if (!modelDir) return undefined;
  const model = modelName(modelDir);
  let files = opts.reports;
  if (!files) {
    type Item = vscode.QuickPickItem & { file?: string };
    const reports = ctx.store.listReports(modelDir).map((file) => ({ file, report: readReport(file) })).filter((x): x is { file: string; report: ProbeReport } => !!x.report);
    // The newest report of each dataset is picked to begin with.
    const firstOfData = new Set<string>();
    const items: Item[] = reports.map(({ file, report }) => {
      const key = report.config.datasetSha256 || report.config.dataset;
      const picked = !firstOfData.has(key) && firstOfData.size < 4;
      if (picked) firstOfData.add(key);
      return { label: path.basename(report.config.dataset), description: `dominant ${moduleLabel(report.dominant.name, report)} · ${new Date(report.createdAt).toLocaleString()}`,
        detail: displayPath(file), file, picked };
    });
    items.push({ label: '$(folder-opened) Other reports…', description: 'probe reports of this model anywhere on disk' });
    if (reports.length < 2) {
      notify.info(`DomLoRA: ${model} has ${reports.length ? 'one PAGE report' : 'no PAGE report'} in its folder; comparing datasets needs two or more. ` +
        'Probe the model on another dataset, or pick other reports.', { title: 'Run PAGE Probe', run: () => vscode.commands.executeCommand('domlora.runProbe', vscode.Uri.file(modelDir)) },
      { title: 'Pick Reports…', run: () => vscode.commands.executeCommand('domlora.compareDatasets', vscode.Uri.file(modelDir), { reports: [] }) });
      return undefined;
    }
    const picked = await vscode.window.showQuickPick(items, { canPickMany: true, title: `DomLoRA: reports of ${model} to compare (two or more)`,
      placeHolder: 'One report per dataset: is the dominant module, and its layer, the same on each?' });
    if (!picked) return undefined;
    files = picked.filter((p) => p.file).map((p) => p.file!);
    if (picked.some((p) => !p.file)) files.push(...await browseReports(modelDir));
  } else if (!files.length) {
    files = await browseReports(modelDir);
  }
  if (files.length < 2) {
    notify.warn(`DomLoRA: pick two or more reports to compare (${files.length} picked).`);
    return undefined;
  }
  // Restricted Mode: reports outside the workspace are not read, as datasets and models are not.
  if (files.some((f) => refuseRestricted(ctx, f, 'the report'))) return undefined;
  let result: CompareResult;
  try {
    result = await ctx.worker.request('compare', { reports: files }).result;
  } catch (err) {
    reportJobError(ctx, 'comparison', model, err);
    return undefined;
  }
  ctx.models.setComparison(modelDir, comparisonView(result));
  ctx.panels.show(modelDir);
  for (const f of result.findings) ctx.log(`[compare] ${f}`);
  return result;
};

async function browseReports(modelDir: string): Promise<string[]> {
  const chosen = await vscode.window.showOpenDialog({
    canSelectFiles: true, canSelectMany: true, openLabel: 'Compare these reports', title: 'DomLoRA: probe reports of the same model',
    filters: { 'PAGE reports': ['json'] }, defaultUri: vscode.Uri.file(path.dirname(modelDir)),
  });
  return chosen?.map((u) => u.fsPath) ?? [];
}

/** The panel's view of a comparison: the result, and each report's shares laid out as the heatmap is. */
export function comparisonView(result: CompareResult): ComparisonView {
  const reports = result.reports.map((r) => readReport(r.file));
  const first = reports.find((r) => r)!;
  const kinds = first.kinds;
  const layers = first.model.layers;
  const names = result.reports.map((r) => path.basename(r.dataset));
  const grids = reports.map((r, i) => {
    const shares = new Array<number>(layers * kinds.length).fill(0);
    for (const m of r?.modules ?? []) {
      const k = kinds.indexOf(m.kind);
      if (k >= 0 && m.layer < layers) shares[m.layer * kinds.length + k] = m.share;
    }
    // Two reports of one dataset get their order as well as the name.
    const label = names.filter((n) => n === names[i]).length > 1 ? `${names[i]} (${i + 1})` : names[i];
    return { label, shares };
  });
  return { result, kinds, layers, grids };
}
