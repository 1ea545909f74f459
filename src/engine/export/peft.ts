// The adapter folder in PEFT's format, exactly, so PEFT, vLLM and llama.cpp load it as it is:
// adapter_config.json + adapter_model.safetensors with keys base_model.model.<module>.lora_{A,B}.weight.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { candidateModules, ModuleSpec } from '../hf/modules';
import { badInput } from '../runtime/errors';
import type { ModelFolder } from '../hf/folder';
import type { LoraAdapter } from '../model/types';
import { makeAdapter, loraScale } from '../model/lora';
import { readHeader, readTensorF32, encodeSafetensors } from '../hf/safetensors';

export interface AdapterTensors { spec: ModuleSpec; a: Float32Array; b: Float32Array }

export interface PeftConfig {
  peft_type: 'LORA'; task_type: 'CAUSAL_LM'; r: number; lora_alpha: number; lora_dropout: number;
  target_modules: string[]; layers_to_transform: number[] | null; layers_pattern: string | null; bias: 'none';
  fan_in_fan_out: boolean; inference_mode: boolean; init_lora_weights: boolean; modules_to_save: null;
  base_model_name_or_path: string; revision: null; use_rslora?: boolean;
}

export const peftKey = (module: string, which: 'A' | 'B') => `base_model.model.${module}.lora_${which}.weight`;

/**
 * target_modules + layers_to_transform when the placement is a product of kinds x layers (one module, or vanilla
 * LoRA); otherwise the full module names, which PEFT matches by suffix.
 */
export function placementToPeft(specs: ModuleSpec[], numLayers: number): { target_modules: string[]; layers_to_transform: number[] | null } {
  const kinds = [...new Set(specs.map((s) => s.kind))];
  const layers = [...new Set(specs.map((s) => s.layer))].sort((a, b) => a - b);
  if (kinds.length * layers.length === specs.length) {
    return { target_modules: kinds, layers_to_transform: layers.length === numLayers ? null : layers };
  }
  return { target_modules: specs.map((s) => s.name), layers_to_transform: null };
}

export function buildPeftConfig(specs: ModuleSpec[], numLayers: number, rank: number, alpha: number, baseModel: string): PeftConfig {
  if (!Number.isInteger(alpha)) throw badInput(`lora_alpha must be an integer for PEFT/Ollama compatibility, got ${alpha}`);
  return {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', r: rank, lora_alpha: alpha, lora_dropout: 0,
    // fan_in_fan_out: GPT-2's Conv1D stores W as [in, out]; PEFT then transposes the merged delta (A and B keep their shapes).
    ...placementToPeft(specs, numLayers), layers_pattern: null, bias: 'none', fan_in_fan_out: specs.some((s) => s.conv1d === true),
    inference_mode: true, init_lora_weights: true, modules_to_save: null, base_model_name_or_path: baseModel, revision: null,
  };
}

/** Writes adapter_config.json and adapter_model.safetensors into `dir` (the caller makes it atomic). */
export function writeAdapterFiles(dir: string, tensors: AdapterTensors[], cfg: PeftConfig, metadata: Record<string, string>): void {
  const list = [];
  for (const t of tensors) {
    list.push({ name: peftKey(t.spec.name, 'A'), shape: [cfg.r, t.spec.dIn], data: t.a });
    list.push({ name: peftKey(t.spec.name, 'B'), shape: [t.spec.dOut, cfg.r], data: t.b });
  }
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), encodeSafetensors(list, { format: 'pt', ...metadata }));
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(cfg, null, 2) + '\n');
}

export interface LoadedAdapter { config: PeftConfig; tensors: AdapterTensors[]; adapters: Map<string, LoraAdapter>; metadata: Record<string, string> }

/** Reads a PEFT LoRA adapter folder and checks it against the model it is applied to. */
export function readAdapterFiles(dir: string, folder: ModelFolder): { config: PeftConfig; tensors: AdapterTensors[]; metadata: Record<string, string> } {
  const cfgFile = path.join(dir, 'adapter_config.json');
  const stFile = path.join(dir, 'adapter_model.safetensors');
  if (!fs.existsSync(cfgFile)) throw badInput('not a PEFT adapter folder: it has no adapter_config.json', dir);
  if (!fs.existsSync(stFile)) throw badInput('not a PEFT adapter folder: it has no adapter_model.safetensors', dir);
  let config: PeftConfig;
  try { config = JSON.parse(fs.readFileSync(cfgFile, 'utf8')); } catch (e) { throw badInput(`invalid JSON (${(e as Error).message})`, cfgFile); }
  if (config.peft_type !== 'LORA') throw badInput(`peft_type is ${JSON.stringify(config.peft_type)}; only LORA adapters are supported`, cfgFile);
  if (!Number.isInteger(config.r) || config.r < 1) throw badInput(`"r" must be a positive integer`, cfgFile);
  const header = readHeader(stFile);
  const specs = new Map(candidateModules(folder.cfg).map((m) => [m.name, m]));
  const tensors: AdapterTensors[] = [];
  for (const key of header.tensors.keys()) {
    const m = /^base_model\.model\.(.+)\.lora_A(?:\.default)?\.weight$/.exec(key);
    if (!m) {
      if (!/\.lora_B(?:\.default)?\.weight$/.test(key)) throw badInput(`unexpected tensor "${key}" (only lora_A / lora_B weights are supported)`, stFile);
      continue;
    }
    const spec = specs.get(m[1]);
    if (!spec) throw badInput(`adapter targets "${m[1]}", which is not a linear module of the model in ${folder.dir} (adapter from another model?)`, stFile);
    const bKey = key.replace('lora_A', 'lora_B');
    const ea = header.tensors.get(key)!, eb = header.tensors.get(bKey);
    if (!eb) throw badInput(`"${key}" has no matching "${bKey}"`, stFile);
    if (ea.shape[0] !== config.r || ea.shape[1] !== spec.dIn) throw badInput(`"${key}" has shape [${ea.shape}], expected [${config.r}, ${spec.dIn}]`, stFile);
    if (eb.shape[0] !== spec.dOut || eb.shape[1] !== config.r) throw badInput(`"${bKey}" has shape [${eb.shape}], expected [${spec.dOut}, ${config.r}]`, stFile);
    tensors.push({ spec, a: readTensorF32(header, key), b: readTensorF32(header, bKey) });
  }
  if (!tensors.length) throw badInput('adapter holds no lora_A/lora_B tensors', stFile);
  tensors.sort((x, y) => x.spec.layer - y.spec.layer || x.spec.name.localeCompare(y.spec.name));
  return { config, tensors, metadata: header.metadata };
}

export function loadAdapter(dir: string, folder: ModelFolder): LoadedAdapter {
  return uploadAdapter(readAdapterFiles(dir, folder));
}

/** The backend's adapters from files already read and checked (readAdapterFiles). */
export function uploadAdapter(files: ReturnType<typeof readAdapterFiles>): LoadedAdapter {
  const { config, tensors, metadata } = files;
  const scale = loraScale(config.lora_alpha, config.r, Boolean(config.use_rslora));
  const adapters = new Map<string, LoraAdapter>();
  for (const t of tensors) adapters.set(t.spec.name, makeAdapter(t.spec, config.r, scale, t.a, t.b));
  return { config, tensors, adapters, metadata };
}
