// Exports of a trained adapter: a merged full model folder, and the same placement for trainers that run on many
// machines (PEFT LoraConfig, Axolotl, LLaMA-Factory, MLX-LM), with the checks downstream runtimes apply.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ExportParams, ExportResult } from '../../protocol/messages';
import { badInput } from '../runtime/errors';
import { JobHooks, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { openModelFolder, ModelFolder } from '../hf/folder';
import { readAdapterFiles, PeftConfig } from './peft';
import { readHeader, writeSafetensorsStreaming } from '../hf/safetensors';
import { writeDirAtomic, writeFileAtomic } from '../runtime/atomic';
import { checkLimits } from '../runtime/limits';
import { claimOutput, MERGED_MARKER } from '../runtime/outputs';
import { loraScale } from '../model/lora';
import { archOf, SUPPORTED_MODEL_TYPES } from '../arch/registry';
import { storedName, parseModuleName } from '../hf/modules';

/** What vLLM, llama.cpp and Ollama refuse, checked before anyone tries. */
export function runtimeChecks(cfg: PeftConfig, modelType: string, tensorNames: string[] = []): { warnings: string[]; loadCommands: string[] } {
  const warnings: string[] = [];
  // llama.cpp's convert_lora_to_gguf.py maps only lora_A / lora_B weights; anything else in the file stops it.
  const extra = tensorNames.filter((n) => !/\.lora_[AB](?:\.default)?\.weight$/.test(n));
  if (extra.length) warnings.push(`llama.cpp converts only lora_A/lora_B tensors; this adapter also holds ${extra.slice(0, 3).join(', ')}${extra.length > 3 ? ', ...' : ''}.`);
  if (cfg.modules_to_save) warnings.push('llama.cpp and vLLM do not load modules_to_save (full copies of modules); only PEFT does.');
  const vllmRanks = [8, 16, 32, 64, 128, 256, 320, 512];
  if (!vllmRanks.includes(cfg.r)) warnings.push(`vLLM supports LoRA ranks ${vllmRanks.join(', ')}; r=${cfg.r} will be refused (retrain with --rank 8/16/...).`);
  if (cfg.r > 64) warnings.push(`vLLM's default --max-lora-rank is 16; start it with --max-lora-rank ${cfg.r}.`);
  else if (cfg.r > 16) warnings.push(`vLLM's default --max-lora-rank is 16; start it with --max-lora-rank ${vllmRanks.find((x) => x >= cfg.r)}.`);
  if (!Number.isInteger(cfg.lora_alpha)) warnings.push('Ollama needs an integer lora_alpha.');
  const ollamaArchs = SUPPORTED_MODEL_TYPES.filter((t) => archOf(t).ollama);
  if (!archOf(modelType).ollama) warnings.push(`Ollama imports safetensors adapters only for ${ollamaArchs.join(', ')}; convert with llama.cpp instead.`);
  const loadCommands = [
    `python -c "from peft import PeftModel; from transformers import AutoModelForCausalLM; m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('${cfg.base_model_name_or_path}'), 'ADAPTER_DIR')"`,
    `vllm serve ${cfg.base_model_name_or_path} --enable-lora --lora-modules domlora=ADAPTER_DIR${cfg.r > 16 ? ` --max-lora-rank ${vllmRanks.find((x) => x >= cfg.r) ?? cfg.r}` : ''}`,
    `python convert_lora_to_gguf.py ADAPTER_DIR --base ${cfg.base_model_name_or_path} --outtype f16 && llama-cli -m BASE.gguf --lora ADAPTER_DIR/*.gguf`,
  ];
  return { warnings, loadCommands };
}

/** The layers and module kinds of a placement, as trainers name them. */
function placement(cfg: PeftConfig, numLayers: number, modelType: string): { kinds: string[]; layers: number[] | null; singleLayer: boolean; fullNames: boolean } {
  // target_modules holds either module kinds (GPT-2's contain a dot: `attn.c_proj`) or full module names.
  const full = cfg.target_modules.map((t) => parseModuleName(t, modelType)).filter((x): x is { layer: number; kind: string } => Boolean(x));
  if (full.length) {
    const kinds = [...new Set(full.map((t) => t.kind))];
    const layers = [...new Set(full.map((t) => t.layer))].sort((a, b) => a - b);
    return { kinds, layers, singleLayer: layers.length < numLayers, fullNames: true };
  }
  const layers = cfg.layers_to_transform ?? null;
  return { kinds: cfg.target_modules, layers, singleLayer: Boolean(layers && layers.length < numLayers), fullNames: false };
}

export async function runExport(params: ExportParams, hooks: JobHooks = {}): Promise<ExportResult> {
  const adapterDir = path.resolve(params.adapterDir);
  const cfgFile = path.join(adapterDir, 'adapter_config.json');
  if (!fs.existsSync(cfgFile)) throw badInput('not a PEFT adapter folder: it has no adapter_config.json', adapterDir);
  let peftCfg: PeftConfig;
  try { peftCfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as PeftConfig; } catch (e) { throw badInput(`invalid JSON (${(e as Error).message})`, cfgFile); }
  const modelDir = params.modelDir ?? peftCfg.base_model_name_or_path;
  if (!modelDir || !fs.existsSync(modelDir)) throw badInput(`the base model "${modelDir}" named in adapter_config.json was not found; pass --model MODEL_DIR`, cfgFile);
  const folder = openModelFolder(modelDir);
  checkLimits(params, ['gpus']);
  // The output is checked before the work, and replaced only when DomLoRA wrote it (runtime/outputs.ts).
  const claim = claimOutput(params.out, params.format === 'merged' ? 'merged' : 'config', { force: params.force });
  const out = claim.path;
  try {
    return await exportTo(params, adapterDir, peftCfg, folder, out, hooks);
  } catch (err) {
    claim.release();
    throw err;
  }
}

async function exportTo(params: ExportParams, adapterDir: string, peftCfg: PeftConfig, folder: ModelFolder, out: string, hooks: JobHooks): Promise<ExportResult> {
  const stFile = path.join(adapterDir, 'adapter_model.safetensors');
  const checks = runtimeChecks(peftCfg, folder.cfg.modelType, fs.existsSync(stFile) ? [...readHeader(stFile).tensors.keys()] : []);
  const gpus = params.gpus ?? 8;
  const { kinds, layers, singleLayer, fullNames } = placement(peftCfg, folder.cfg.numLayers, folder.cfg.modelType);
  const lines: string[] = [];
  switch (params.format) {
    case 'merged': {
      await exportMerged(adapterDir, folder, out, hooks);
      lines.push(`merged model written to ${out} (W + (alpha/r) B A folded into the base weights)`);
      break;
    }
    case 'peft-config': {
      const args = { r: peftCfg.r, lora_alpha: peftCfg.lora_alpha, lora_dropout: peftCfg.lora_dropout, target_modules: peftCfg.target_modules,
        layers_to_transform: peftCfg.layers_to_transform, bias: 'none', task_type: 'CAUSAL_LM' };
      const py = `# LoRA placement found by DomLoRA (PAGE). Use with any PEFT trainer (TRL SFTTrainer, HF Trainer).\nfrom peft import LoraConfig\n\n` +
        `lora_config = LoraConfig(\n${Object.entries(args).map(([k, v]) => `    ${k}=${pyValue(v)},`).join('\n')}\n)\n\n` +
        `# Multi-GPU: accelerate launch --num_processes ${gpus} train.py   (or: torchrun --nproc_per_node ${gpus} train.py)\n`;
      writeFileAtomic(out, py);
      lines.push(`PEFT LoraConfig written to ${out}`, `launch on ${gpus} GPUs: accelerate launch --num_processes ${gpus} train.py`);
      break;
    }
    case 'axolotl': {
      const yaml = [`# LoRA placement found by DomLoRA (PAGE).`, `base_model: ${peftCfg.base_model_name_or_path}`, 'adapter: lora',
        `lora_r: ${peftCfg.r}`, `lora_alpha: ${peftCfg.lora_alpha}`, `lora_dropout: ${peftCfg.lora_dropout}`,
        'lora_target_modules:', ...kinds.map((k) => `  - ${k}`),
        ...(layers && singleLayer ? ['peft_layers_to_transform:', ...layers.map((l) => `  - ${l}`)] : []),
        '# datasets, sequence_len, micro_batch_size, num_epochs, learning_rate: fill in for your run', ''].join('\n');
      if (fullNames && kinds.length * (layers?.length ?? 1) !== peftCfg.target_modules.length) {
        throw badInput('this placement pairs different module kinds with different layers, which Axolotl\'s lora_target_modules + peft_layers_to_transform cannot express; use --format peft-config');
      }
      writeFileAtomic(out, yaml);
      lines.push(`Axolotl config written to ${out}`, `launch on ${gpus} GPUs: accelerate launch --num_processes ${gpus} -m axolotl.cli.train ${out}`);
      break;
    }
    case 'llamafactory': {
      if (singleLayer) {
        throw badInput(`LLaMA-Factory's lora_target takes module kinds for every layer and cannot restrict them to layer${layers!.length > 1 ? 's' : ''} ${layers!.join(', ')}: ` +
          'a config would train a different placement. Use --format peft-config (or axolotl) for this adapter.');
      }
      const yaml = [`# LoRA placement found by DomLoRA (PAGE).`, `model_name_or_path: ${peftCfg.base_model_name_or_path}`, 'stage: sft', 'finetuning_type: lora',
        `lora_rank: ${peftCfg.r}`, `lora_alpha: ${peftCfg.lora_alpha}`, `lora_target: ${kinds.join(',')}`, ''].join('\n');
      writeFileAtomic(out, yaml);
      lines.push(`LLaMA-Factory config written to ${out}`, `launch on ${gpus} GPUs: FORCE_TORCHRUN=1 NPROC_PER_NODE=${gpus} llamafactory-cli train ${out}`);
      break;
    }
    case 'mlx': {
      const L = folder.cfg.numLayers;
      const lowest = layers ? Math.min(...layers) : 0;
      const contiguousTop = layers && layers.length === L - lowest && layers.every((l, i) => l === lowest + i);
      if (singleLayer && !contiguousTop) {
        throw badInput(`MLX-LM adapts the last N layers (num_layers) and cannot target only layer${layers!.length > 1 ? 's' : ''} ${layers!.join(', ')} of ${L}; ` +
          'an MLX config would train a different placement. Use --format peft-config, or train with DomLoRA and convert the PEFT adapter.');
      }
      const yaml = [`# LoRA placement found by DomLoRA (PAGE).`, `model: ${peftCfg.base_model_name_or_path}`, 'fine_tune_type: lora',
        // MLX-LM's keys are the module paths under a layer (`self_attn.q_proj`, Phi-3's `mlp.gate_up_proj`).
        `num_layers: ${layers ? L - lowest : -1}`, 'lora_parameters:', `  keys: [${kinds.map((k) => `"${archOf(folder.cfg.modelType).modules.paths[k] ?? k}"`).join(', ')}]`,
        `  rank: ${peftCfg.r}`, `  scale: ${loraScale(peftCfg.lora_alpha, peftCfg.r)}`, `  dropout: ${peftCfg.lora_dropout}`, ''].join('\n');
      writeFileAtomic(out, yaml);
      lines.push(`MLX-LM config written to ${out}`, `run: mlx_lm.lora --config ${out} --train (MLX runs on one Apple-silicon machine)`);
      break;
    }
    default:
      throw badInput(`--format must be one of merged, peft-config, axolotl, llamafactory, mlx; got "${params.format as string}"`);
  }
  if (checks.warnings.length) lines.push('', 'Downstream runtimes:', ...checks.warnings.map((w) => `  ! ${w}`));
  lines.push('', 'Load the adapter with:', ...checks.loadCommands.map((c) => `  ${c.replace(/ADAPTER_DIR/g, adapterDir)}`));
  return { format: params.format, out, text: lines.join('\n'), warnings: checks.warnings, loadCommands: checks.loadCommands.map((c) => c.replace(/ADAPTER_DIR/g, adapterDir)) };
}

function pyValue(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (Array.isArray(v)) return `[${v.map(pyValue).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** Folds W + (alpha / r) B A into a copy of the base model, tensor by tensor. */
async function exportMerged(adapterDir: string, folder: ModelFolder, out: string, hooks: JobHooks): Promise<void> {
  const { config, tensors } = readAdapterFiles(adapterDir, folder);
  const scale = loraScale(config.lora_alpha, config.r, Boolean(config.use_rslora));
  // Keyed by the name in the weight files (GPT-2 checkpoints may store `h.0...` for `transformer.h.0...`).
  const delta = new Map(tensors.map((t) => [storedName((n) => folder.store.has(n), `${t.spec.name}.weight`, folder.cfg.modelType), t]));
  const names = folder.store.names;
  // Tensor by tensor, read, merged and written: memory holds one tensor, not the model.
  const merge = async (name: string, i: number): Promise<Float32Array> => {
    await yieldToEvents(); // a cancel lands between tensors
    throwIfCancelled(hooks);
    const w = folder.store.read(name);
    const t = delta.get(name);
    if (t) {
      const { dIn, dOut } = t.spec;
      const r = config.r;
      // nn.Linear stores W [d_out, d_in]; GPT-2's Conv1D stores it [d_in, d_out] (PEFT's fan_in_fan_out).
      const [rowStride, colStride] = t.spec.conv1d ? [1, dOut] : [dIn, 1];
      for (let o = 0; o < dOut; o++) {
        for (let k = 0; k < r; k++) {
          const bv = scale * t.b[o * r + k];
          if (bv === 0) continue;
          const arow = k * dIn, wrow = o * rowStride;
          for (let j = 0; j < dIn; j++) w[wrow + j * colStride] += bv * t.a[arow + j];
        }
      }
    }
    hooks.onProgress?.({ phase: 'export', done: i + 1, total: names.length });
    return w;
  };
  await writeDirAtomic(out, async (tmp) => {
    await writeSafetensorsStreaming(path.join(tmp, 'model.safetensors'), names.map((name) => ({ name, shape: folder.store.entry(name).shape })),
      merge, { format: 'pt', [MERGED_MARKER]: adapterDir });
    const cfg = { ...folder.cfg.raw, torch_dtype: 'float32' };
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'tokenizer.model']) {
      const src = path.join(folder.dir, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(tmp, f));
    }
  });
}
