// Opening a Hugging Face model folder: config, weights (headers first, tensors on demand), tokenizer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readConfig, ModelConfig } from './config';
import { candidateModules, parameterCount, headTensorName, storedName, storedWeightShape } from './modules';
import { ARCHITECTURES } from '../arch/registry';
import { WeightStore } from './safetensors';
import { Decoder } from '../model/decoder';
import { ModelOptions } from '../model/weights';
import { ModelTokenizer } from './tokenizer';
import { badInput } from '../runtime/errors';
import { adapterParams } from '../model/lora';
import type { InfoResult, ModelSummary } from '../../protocol/messages';
import { DEFAULTS } from '../../protocol/params';
import { checkLimits } from '../runtime/limits';

export interface ModelFolder { dir: string; cfg: ModelConfig; store: WeightStore }

export function openModelFolder(dir: string): ModelFolder {
  const abs = path.resolve(dir);
  if (!fs.existsSync(abs)) throw badInput('model folder does not exist', abs);
  if (!fs.statSync(abs).isDirectory()) throw badInput('is not a folder (expected a Hugging Face model folder)', abs);
  const cfg = readConfig(abs);
  const store = WeightStore.open(abs);
  return { dir: abs, cfg, store };
}

export function summarise(folder: ModelFolder): ModelSummary {
  const { cfg } = folder;
  return {
    path: folder.dir, modelType: cfg.modelType, layers: cfg.numLayers, hiddenSize: cfg.hiddenSize,
    intermediateSize: cfg.intermediateSize, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim,
    vocabSize: cfg.vocabSize, parameters: parameterCount(cfg), tiedEmbeddings: cfg.tieWordEmbeddings || !folder.store.has(headTensorName(cfg.modelType)),
  };
}

/** `domlora info`: everything from the headers alone, so it is instant for any model size. */
export function modelInfo(dir: string, rank: number = DEFAULTS.rank): InfoResult {
  checkLimits({ rank }, ['rank']);
  const folder = openModelFolder(dir);
  const modules = candidateModules(folder.cfg);
  // Check the weights the config implies are present with the right shapes, still from headers only.
  for (const m of modules) {
    const name = storedName((n) => folder.store.has(n), `${m.name}.weight`, folder.cfg.modelType);
    const e = folder.store.entry(name);
    const want = storedWeightShape(folder.cfg, m); // [d_out, d_in]; GPT-2's Conv1D [d_in, d_out]
    if (e.shape[0] !== want[0] || e.shape[1] !== want[1]) {
      throw badInput(`tensor "${name}" has shape [${e.shape}], config.json implies [${want}]`, folder.dir);
    }
  }
  return {
    model: summarise(folder), kinds: [...ARCHITECTURES[folder.cfg.modelType].modules.kinds], rank, dtype: folder.store.dtype,
    modules: modules.map((m) => ({ ...m, adapterParams: adapterParams(m, rank) })),
  };
}

export interface LoadedModel { folder: ModelFolder; model: Decoder; tokenizer: ModelTokenizer; loadSeconds: number }

export function loadModel(dir: string, opts: ModelOptions = {}): LoadedModel {
  const t0 = Date.now();
  const folder = openModelFolder(dir);
  const tokenizer = ModelTokenizer.load(folder.dir);
  const model = Decoder.load(folder.cfg, folder.store, opts);
  return { folder, model, tokenizer, loadSeconds: (Date.now() - t0) / 1000 };
}
