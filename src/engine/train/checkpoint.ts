// The adapter folder a run writes: PEFT's files at its top (what users load and publish) and, while the run goes on,
// checkpoint/ with the optimizer's moments and the trainer's state, from which --resume continues the same run bit
// for bit. The finished folder drops checkpoint/ (about twice the adapter's size, and nothing PEFT, vLLM or the Hub
// want) unless the run is asked to keep it (--keep-checkpoint), to be extended later with --resume --steps N.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ProbeReport } from '../../protocol/messages';
import type { ModuleSpec } from '../hf/modules';
import { encodeSafetensors, readHeader, readTensorF32 } from '../hf/safetensors';
import { buildPeftConfig, writeAdapterFiles } from '../export/peft';
import { sweepStaleTemps, writeDirAtomic } from '../runtime/atomic';
import { badInput } from '../runtime/errors';
import type { RunPlan, TrainerState } from './plan';

/** Provenance written into the adapter's safetensors metadata. */
export function provenance(plan: RunPlan, report?: ProbeReport): Record<string, string> {
  const meta: Record<string, string> = {
    'domlora.version': typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev',
    'domlora.preset': plan.preset, 'domlora.targets': plan.targets.join(','), 'domlora.dataset_sha256': plan.dataSha256,
    'domlora.steps': String(plan.steps), 'domlora.seed': String(plan.seed), 'domlora.lr': String(plan.lr),
  };
  if (report) {
    meta['domlora.page_share'] = String(report.dominant.share);
    meta['domlora.page_stability'] = String(report.dominant.stability);
    if (report.config?.datasetSha256) meta['domlora.probe_dataset_sha256'] = report.config.datasetSha256;
  }
  return meta;
}

/**
 * Writes the whole folder atomically: PEFT files, then checkpoint/ (moments keyed m.<peft key> and v.<peft key>),
 * which the final write leaves out unless `keepCheckpoint`.
 */
export async function writeCheckpoint(dir: string, st: TrainerState, specs: ModuleSpec[], params32: Map<string, { a: Float32Array; b: Float32Array }>,
  moments: Map<string, Float32Array>, o: { baseModel: string; final: boolean; keepCheckpoint?: boolean; provenance: Record<string, string>; root?: string }, numLayers: number): Promise<void> {
  const cfg = buildPeftConfig(specs, numLayers, st.plan.rank, st.plan.alpha, o.baseModel);
  await writeDirAtomic(dir, (tmp) => {
    writeAdapterFiles(tmp, specs.map((s) => ({ spec: s, ...params32.get(s.name)! })), cfg, { ...o.provenance, 'domlora.step': String(st.step) });
    if (o.final && !o.keepCheckpoint) return;
    const ck = path.join(tmp, 'checkpoint');
    fs.mkdirSync(ck);
    const list = [...moments.entries()].map(([name, data]) => ({ name, shape: [data.length], data }));
    fs.writeFileSync(path.join(ck, 'optimizer.safetensors'), encodeSafetensors(list, { format: 'domlora-adamw' }));
    fs.writeFileSync(path.join(ck, 'trainer_state.json'), JSON.stringify(st, null, 1) + '\n');
  }, { root: o.root });
}

/** Reads a folder writeCheckpoint wrote: the trainer's state, and every tensor (adapter and moments) by name. */
export function readCheckpoint(dir: string): { state: TrainerState; tensors: Map<string, Float32Array> } {
  // A writer killed between its two renames leaves the last complete copy aside: put it back first.
  sweepStaleTemps(path.dirname(dir), path.basename(dir));
  const stFile = path.join(dir, 'checkpoint', 'trainer_state.json');
  if (!fs.existsSync(stFile)) {
    const finished = fs.existsSync(path.join(dir, 'adapter_model.safetensors'));
    throw badInput(finished
      ? 'has no checkpoint/: a finished run keeps its checkpoint only when trained with --keep-checkpoint, so it cannot be resumed or extended'
      : 'has no checkpoint/trainer_state.json: not a DomLoRA training folder', dir);
  }
  let state: TrainerState;
  try { state = JSON.parse(fs.readFileSync(stFile, 'utf8')); } catch (e) { throw badInput(`invalid JSON (${(e as Error).message})`, stFile); }
  if (!state?.plan?.modelFingerprint) throw badInput('is not a DomLoRA trainer state', stFile);
  const tensors = new Map<string, Float32Array>();
  const opt = readHeader(path.join(dir, 'checkpoint', 'optimizer.safetensors'));
  for (const name of opt.tensors.keys()) tensors.set(name, readTensorF32(opt, name));
  const ad = readHeader(path.join(dir, 'adapter_model.safetensors'));
  for (const name of ad.tensors.keys()) tensors.set(name, readTensorF32(ad, name));
  return { state, tensors };
}
