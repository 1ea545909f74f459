// The check's state file, check-state.json in its folder: the plan (everything the check depends on, fixed when it
// starts) and the runs already finished. It is rewritten atomically after every run, so a check cancelled or killed
// at any moment resumes from it without redoing a finished run, and with the same plan.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Backend, CheckParams, CheckRun } from '../../protocol/messages';
import { writeFileAtomic } from '../runtime/atomic';
import { badInput } from '../runtime/errors';
import type { PlannedPlacement } from './placements';

export const STATE_FILE = 'check-state.json';
export const RESULT_FILE = 'check.json';
export const REPORT_FILE = 'report.json';
export const ADAPTERS_DIR = 'adapters';

/** Everything the check's runs depend on, fixed when it starts. */
export interface CheckPlan {
  modelDir: string; modelFingerprint: string;
  data: string; dataSha256: string; evalData?: string; evalSplit: number;
  /** The held-out split's seed: the first seed, for the runs of every seed. */
  splitSeed: number;
  report: string; probed: boolean;
  rank: number; alpha: number; lr: number; steps: number; batchSize: number; gradAccum: number; seqLen: number;
  warmupSteps?: number; weightDecay: number; maxSamples?: number;
  seeds: number[];
  /** The placements as given (the default list when none was), and as resolved against the report. */
  specs: string[];
  placements: PlannedPlacement[];
  /** The records the runs train on and are evaluated on (the same for every run). */
  trainRecords: number; evalRecords: number;
}

export interface CheckState {
  tool: { name: 'domlora'; version: string };
  kind: 'placement-check';
  createdAt: string;
  plan: CheckPlan;
  /** Finished runs by `${placement id}#${seed}`. */
  finished: Record<string, CheckRun>;
  /** The backend of the last run trained. */
  backend?: Backend;
}

export const runKey = (id: string, seed: number) => `${id}#${seed}`;

/** The folder of one run's adapter, inside the check's folder. */
export function runDir(checkDir: string, id: string, seed: number): string {
  return path.join(checkDir, ADAPTERS_DIR, id, `seed-${seed}`);
}

export function writeState(checkDir: string, state: CheckState): void {
  writeFileAtomic(path.join(checkDir, STATE_FILE), JSON.stringify(state, null, 1) + '\n');
}

/** Reads the state of a check folder named by --resume, refusing what is not one. */
export function readState(checkDir: string): CheckState {
  const file = path.join(checkDir, STATE_FILE);
  if (!fs.existsSync(checkDir)) throw badInput('does not exist: --resume names the folder of a check', checkDir);
  if (!fs.existsSync(file)) throw badInput(`has no ${STATE_FILE}: not the folder of a DomLoRA placement check`, checkDir);
  let st: CheckState;
  try { st = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw badInput(`invalid JSON (${(e as Error).message})`, file); }
  if (st?.tool?.name !== 'domlora' || st.kind !== 'placement-check' || !st.plan?.placements || typeof st.finished !== 'object') {
    throw badInput('is not the state of a DomLoRA placement check', file);
  }
  return st;
}

/** The params a resumed check may repeat only with its plan's value, and how the plan holds each. */
const FIXED: readonly [keyof CheckParams, (p: CheckPlan) => unknown, string][] = [
  ['rank', (p) => p.rank, 'rank'], ['alpha', (p) => p.alpha, 'alpha'], ['lr', (p) => p.lr, 'lr'], ['steps', (p) => p.steps, 'steps'],
  ['batchSize', (p) => p.batchSize, 'batch-size'], ['gradAccum', (p) => p.gradAccum, 'grad-accum'], ['seqLen', (p) => p.seqLen, 'seq-len'],
  ['evalSplit', (p) => p.evalSplit, 'eval-split'], ['seed', (p) => p.seeds[0], 'seed'], ['seeds', (p) => p.seeds.length, 'seeds'],
  ['maxSamples', (p) => p.maxSamples, 'max-samples'], ['warmupSteps', (p) => p.warmupSteps, 'warmup-steps'], ['weightDecay', (p) => p.weightDecay, 'weight-decay'],
];

/**
 * A flag given with --resume that would change the check is refused, naming the check's value: the runs already
 * finished were made with the plan's, and mixing budgets would make the table compare unlike with unlike.
 */
export function checkResumeParams(params: CheckParams, plan: CheckPlan, stateFile: string): void {
  const conflict = (flag: string, given: unknown, theirs: unknown) => badInput(`--${flag} ${String(given)} conflicts with the check's ` +
    `${String(theirs ?? 'none')}: --resume continues the same check; leave --${flag} out (or start a new check with another --out)`, stateFile);
  for (const [key, of, flag] of FIXED) {
    const given = params[key];
    if (given !== undefined && given !== of(plan)) throw conflict(flag, given, of(plan));
  }
  if (params.placements?.length) {
    const given = params.placements.flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);
    if (given.join(',') !== plan.specs.join(',')) throw conflict('placements', given.join(','), plan.specs.join(','));
  }
  if (params.report !== undefined && path.resolve(params.report) !== plan.report) throw conflict('report', path.resolve(params.report), plan.report);
  if (params.evalData !== undefined && path.resolve(params.evalData) !== plan.evalData) throw conflict('eval-data', path.resolve(params.evalData), plan.evalData);
}
