// The `domlora.*` settings, read in one place. Every job reads them when it starts, so a change applies to the next
// job without a reload.
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BackendChoice } from '../protocol/messages';

export interface Settings {
  backend: BackendChoice;
  rank: number;
  alpha: number;
  samples: number;
  seqLen: number;
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

export const SETTING_DEFAULTS = {
  backend: 'auto', rank: 8, alpha: 16, samples: 32, seqLen: 512, learningRate: 1e-3, steps: 100, dataset: '', adapterDirectory: '',
  gpuMemoryGiB: 8,
  huggingFaceCache: '',
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

function positive(value: unknown, fallback: number, integer: boolean): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isFinite(n) || n <= 0) return fallback;
  return integer ? Math.round(n) : n;
}

export function readSettings(scope?: vscode.Uri): Settings {
  const c = vscode.workspace.getConfiguration('domlora', scope);
  const backend = c.get<string>('backend', SETTING_DEFAULTS.backend);
  const valid: BackendChoice[] = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'];
  return {
    backend: (valid as string[]).includes(backend) ? (backend as BackendChoice) : 'auto',
    rank: positive(c.get('rank'), SETTING_DEFAULTS.rank, true),
    alpha: positive(c.get('alpha'), SETTING_DEFAULTS.alpha, false),
    samples: positive(c.get('samples'), SETTING_DEFAULTS.samples, true),
    seqLen: positive(c.get('seqLen'), SETTING_DEFAULTS.seqLen, true),
    learningRate: positive(c.get('learningRate'), SETTING_DEFAULTS.learningRate, false),
    steps: positive(c.get('steps'), SETTING_DEFAULTS.steps, true),
    dataset: resolveSettingPath(c.get<string>('dataset', ''), scope),
    adapterDirectory: resolveSettingPath(c.get<string>('adapterDirectory', ''), scope),
    gpuMemoryGiB: positive(c.get('gpuMemoryGiB'), SETTING_DEFAULTS.gpuMemoryGiB, false),
    huggingFaceCache: resolveSettingPath(c.get<string>('huggingFaceCache', ''), scope),
  };
}
