// The adapter folder a run writes: PEFT's files at its top (what users load and publish) and checkpoint/ with the
// optimizer's moments and the trainer's state, from which --resume continues the same run bit for bit.
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
export function provenance(plan: RunPlan, fromReport?: string): Record<string, string> {
  const meta: Record<string, string> = {
    'domlora.version': typeof DOMLORA_VERSION === 'string' ? DOMLORA_VERSION : 'dev',
    'domlora.preset': plan.preset, 'domlora.targets': plan.targets.join(','), 'domlora.dataset_sha256': plan.dataSha256,
    'domlora.steps': String(plan.steps), 'domlora.seed': String(plan.seed), 'domlora.lr': String(plan.lr),
  };
  if (fromReport) {
    try {
      const r = JSON.parse(fs.readFileSync(fromReport, 'utf8')) as ProbeReport;
      meta['domlora.page_share'] = String(r.dominant.share);
      meta['domlora.page_stability'] = String(r.dominant.stability);
      meta['domlora.probe_dataset_sha256'] = r.config.datasetSha256;
    } catch { /* provenance is best effort; the report was validated before training */ }
  }
  return meta;
}

/** Writes the whole folder atomically: PEFT files, then checkpoint/ (moments keyed m.<peft key> and v.<peft key>). */
export async function writeCheckpoint(dir: string, st: TrainerState, specs: ModuleSpec[], params32: Map<string, { a: Float32Array; b: Float32Array }>,
  moments: Map<string, Float32Array>, o: { baseModel: string; final: boolean; provenance: Record<string, string> }, numLayers: number): Promise<void> {
  const cfg = buildPeftConfig(specs, numLayers, st.plan.rank, st.plan.alpha, o.baseModel);
  await writeDirAtomic(dir, (tmp) => {
    writeAdapterFiles(tmp, specs.map((s) => ({ spec: s, ...params32.get(s.name)! })), cfg, { ...o.provenance, 'domlora.step': String(st.step) });
    const ck = path.join(tmp, 'checkpoint');
    fs.mkdirSync(ck);
    const list = [...moments.entries()].map(([name, data]) => ({ name, shape: [data.length], data }));
    fs.writeFileSync(path.join(ck, 'optimizer.safetensors'), encodeSafetensors(list, { format: 'domlora-adamw' }));
    fs.writeFileSync(path.join(ck, 'trainer_state.json'), JSON.stringify(st, null, 1) + '\n');
  });
}

/** Reads a folder writeCheckpoint wrote: the trainer's state, and every tensor (adapter and moments) by name. */
export function readCheckpoint(dir: string): { state: TrainerState; tensors: Map<string, Float32Array> } {
  // A writer killed between its two renames leaves the last complete copy aside: put it back first.
  sweepStaleTemps(path.dirname(dir), path.basename(dir));
  const stFile = path.join(dir, 'checkpoint', 'trainer_state.json');
  if (!fs.existsSync(stFile)) throw badInput('has no checkpoint/trainer_state.json: not a DomLoRA training folder', dir);
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

/** An empty folder (one the caller reserved for the output) holds nothing to lose. */
export function isEmptyFolder(dir: string): boolean {
  try { return fs.statSync(dir).isDirectory() && fs.readdirSync(dir).length === 0; } catch { return false; }
}
