// The `domlora.*` settings, read in one place. Every job reads them when it starts, so a change applies to the next
// job without a reload.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BackendChoice } from '../protocol/messages';
import { DEFAULTS } from '../protocol/params';

export interface Settings {
  backend: BackendChoice;
  rank: number;
  alpha: number;
  samples: number;
  /** Undefined unless the user set domlora.seqLen: the engine then runs at the smaller of 512 and the model's context. */
  seqLen?: number;
  learningRate: number;
  steps: number;
  /** Absolute path of the dataset named by the setting, or undefined when the user is to be asked. */
  dataset?: string;
  /** Absolute path of the folder trained adapters go to, or undefined for the model's `.domlora` folder. */
  adapterDirectory?: string;
  /** The GPU memory budget (GiB) the engine plans webgpu jobs for. */
  gpuMemoryGiB: number;
  /** Absolute path of the Hugging Face hub cache the Models view lists, or undefined for the environment's. */
  huggingFaceCache?: string;
}

/** The settings' defaults: the protocol's (one source for the CLI, the extension and the demo); package.json repeats them. */
export const SETTING_DEFAULTS = {
  backend: 'auto', rank: DEFAULTS.rank, alpha: DEFAULTS.alpha, samples: DEFAULTS.samples, seqLen: DEFAULTS.seqLen, learningRate: DEFAULTS.lr,
  steps: DEFAULTS.steps, dataset: '', adapterDirectory: '', gpuMemoryGiB: DEFAULTS.gpuMemoryGiB, huggingFaceCache: '',
} as const;

/** Resolves a leading `~`, `${workspaceFolder}` and relative paths (against the folder that owns the setting, or the first one). */
export function resolveSettingPath(value: string, scope?: vscode.Uri): string | undefined {
  const v = value.trim();
  if (!v) return undefined;
  const folder = (scope && vscode.workspace.getWorkspaceFolder(scope)) ?? vscode.workspace.workspaceFolders?.[0];
  const base = folder?.uri.scheme === 'file' ? folder.uri.fsPath : undefined;
  const home = /^~(?=$|[\\/])/.test(v) ? os.homedir() + v.slice(1) : v;
  const expanded = base ? home.replace(/\$\{workspaceFolder\}/g, () => base) : home;
  if (path.isAbsolute(expanded)) return expanded;
  return base ? path.join(base, expanded) : undefined;
}

/**
 * A numeric setting as the user wrote it (the default when unset). A value out of range is not replaced here: the
 * engine refuses it before the job starts, naming the setting (src/protocol/params.ts), so a typo is seen, not hidden.
 */
function numeric(value: unknown, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  return typeof value === 'number' ? value : Number(value);
}

/** Whether the user set `key` anywhere (user, workspace or folder settings), rather than leaving its default. */
function isSet(c: vscode.WorkspaceConfiguration, key: string): boolean {
  const i = c.inspect(key);
  return [i?.globalValue, i?.workspaceValue, i?.workspaceFolderValue, i?.globalLanguageValue, i?.workspaceLanguageValue,
    i?.workspaceFolderLanguageValue].some((v) => v !== undefined);
}

/**
 * The settings that name a path or a backend: package.json lists them as `restrictedConfigurations`, so that in
 * Restricted Mode a cloned repository's `.vscode/settings.json` cannot point DomLoRA at another folder or backend.
 */
export const RESTRICTED_SETTINGS = ['backend', 'dataset', 'adapterDirectory', 'huggingFaceCache'] as const;

/**
 * A restricted setting's value: in Restricted Mode the user's own (global) value only, as VS Code does for
 * `restrictedConfigurations`; read here too so that the rule holds whatever VS Code's version or trust settings.
 */
export function settingValue<T>(c: vscode.WorkspaceConfiguration, key: (typeof RESTRICTED_SETTINGS)[number], fallback: T, trusted: boolean): T {
  if (trusted) return c.get<T>(key, fallback);
  return c.inspect<T>(key)?.globalValue ?? fallback;
}

/** The settings for a job on `scope`; `trusted` false (Restricted Mode) reads the restricted ones from user settings only. */
export function readSettings(scope?: vscode.Uri, trusted = vscode.workspace.isTrusted): Settings {
  const c = vscode.workspace.getConfiguration('domlora', scope);
  const backend = settingValue<string>(c, 'backend', SETTING_DEFAULTS.backend, trusted);
  const valid: BackendChoice[] = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];
  return {
    backend: (valid as string[]).includes(backend) ? (backend as BackendChoice) : 'auto',
    rank: numeric(c.get('rank'), SETTING_DEFAULTS.rank),
    alpha: numeric(c.get('alpha'), SETTING_DEFAULTS.alpha),
    samples: numeric(c.get('samples'), SETTING_DEFAULTS.samples),
    seqLen: isSet(c, 'seqLen') ? numeric(c.get('seqLen'), SETTING_DEFAULTS.seqLen) : undefined,
    learningRate: numeric(c.get('learningRate'), SETTING_DEFAULTS.learningRate),
    steps: numeric(c.get('steps'), SETTING_DEFAULTS.steps),
    dataset: resolveSettingPath(settingValue(c, 'dataset', '', trusted), scope),
    adapterDirectory: resolveSettingPath(settingValue(c, 'adapterDirectory', '', trusted), scope),
    gpuMemoryGiB: numeric(c.get('gpuMemoryGiB'), SETTING_DEFAULTS.gpuMemoryGiB),
    huggingFaceCache: resolveSettingPath(settingValue(c, 'huggingFaceCache', '', trusted), scope),
  };
}
