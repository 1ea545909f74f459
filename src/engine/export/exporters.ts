// Exports of a trained adapter: a merged full model folder, and the same placement for trainers that run on many
// machines (PEFT LoraConfig, Axolotl, LLaMA-Factory, MLX-LM), with the checks downstream runtimes apply.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ExportParams, ExportResult } from '../../protocol/messages';
import { shellFor, shellWord as quoteWord, UnquotableError, withEnv, type Shell } from '../../protocol/shell';
import { badInput, DomLoraError } from '../runtime/errors';
import { JobHooks, throwIfCancelled, yieldToEvents } from '../runtime/jobs';
import { openModelFolder, ModelFolder } from '../hf/folder';
import { readAdapterFiles, PeftConfig } from './peft';
import { readHeader, writeSafetensorsStreaming } from '../hf/safetensors';
import { writeDirAtomic, writeFileAtomic, type WriteScope } from '../runtime/atomic';
import { checkLimits } from '../runtime/limits';
import { claimOutput, MERGED_MARKER } from '../runtime/outputs';
import { loraScale } from '../model/lora';
import { archOf, SUPPORTED_MODEL_TYPES } from '../arch/registry';
import { moduleName, storedName, parseModuleName } from '../hf/modules';

/**
 * What vLLM, llama.cpp and Ollama refuse, checked before anyone tries, and the commands that load the adapter, with
 * every path quoted for `shell` (the adapter folder is ADAPTER_DIR until one is given). Throws a bad-input error for
 * a path no quoting makes safe to paste (see shellWord).
 */
export function runtimeChecks(cfg: PeftConfig, modelType: string, tensorNames: string[] = [],
  o: { adapterDir?: string; shell?: Shell } = {}): { warnings: string[]; loadCommands: string[] } {
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
  return { warnings, loadCommands: loadCommands(cfg, o.adapterDir ?? 'ADAPTER_DIR', o.shell ?? shellFor(process.platform)) };
}

/** PEFT in Python, vLLM, and llama.cpp's conversion then llama-cli: each a line to paste, its paths quoted. */
function loadCommands(cfg: PeftConfig, adapterDir: string, shell: Shell): string[] {
  const base = cfg.base_model_name_or_path;
  const word = (s: string) => shellWord(s, shell);
  // The paths themselves first, so a refusal names the path rather than a word built from it.
  word(adapterDir);
  word(base);
  // The Python code is one shell word; its paths are Python string literals inside it. PowerShell 5 drops double
  // quotes from the arguments of native programs, so there the literals take single quotes (doubled by the quoting).
  const py = (s: string) => (shell === 'posix' ? JSON.stringify(s) : `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`);
  const code = `from peft import PeftModel; from transformers import AutoModelForCausalLM; m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(${py(base)}), ${py(adapterDir)})`;
  const rank = cfg.r > 16 ? ` --max-lora-rank ${[8, 16, 32, 64, 128, 256, 320, 512].find((x) => x >= cfg.r) ?? cfg.r}` : '';
  // The GGUF file is named, not globbed: PowerShell does not expand `*` for native programs.
  const gguf = `${adapterDir.replace(/[\\/]+$/, '')}${shell === 'posix' ? '/' : '\\'}adapter-f16.gguf`;
  const then = shell === 'posix' ? ' && ' : '; ';
  return [
    `python -c ${word(code)}`,
    `vllm serve ${word(base)} --enable-lora --lora-modules ${word(`domlora=${adapterDir}`)}${rank}`,
    `python convert_lora_to_gguf.py ${word(adapterDir)} --base ${word(base)} --outtype f16 --outfile ${word(gguf)}${then}llama-cli -m BASE.gguf --lora ${word(gguf)}`,
  ];
}

/**
 * The adapter's placement as trainers can express it: its full module names (the model's own, as PEFT matches them),
 * the kinds and layers they span, and whether they are exactly every kind at every one of those layers (a product,
 * which target_modules + layers_to_transform can say).
 */
interface Placement { modules: string[]; kinds: string[]; layers: number[]; product: boolean; allLayers: boolean }

function placementOf(cfg: PeftConfig, numLayers: number, modelType: string): Placement {
  // target_modules holds either module kinds (GPT-2's contain a dot: `attn.c_proj`) or full module names.
  const full = cfg.target_modules.map((t) => parseModuleName(t, modelType)).filter((x): x is { layer: number; kind: string } => Boolean(x));
  const pairs = full.length ? full
    : (cfg.layers_to_transform ?? Array.from({ length: numLayers }, (_, l) => l)).flatMap((layer) => cfg.target_modules.map((kind) => ({ layer, kind })));
  const kinds = [...new Set(pairs.map((p) => p.kind))];
  const layers = [...new Set(pairs.map((p) => p.layer))].sort((a, b) => a - b);
  const modules = [...new Set(pairs.map((p) => moduleName(p.layer, p.kind, modelType)))];
  return { modules, kinds, layers, product: kinds.length * layers.length === modules.length, allLayers: layers.length === numLayers };
}

/** The value users must set before running an exported config; every tool fails loudly on it if left as is. */
export const FILL_IN = 'FILL_IN';

const HEADER = (p: Placement) => [
  `# LoRA placement found by DomLoRA (PAGE): ${p.modules.length === 1 ? p.modules[0] : `${p.modules.length} modules (${p.kinds.join(', ')} at layer${p.layers.length > 1 ? 's' : ''} ${p.layers.join(', ')})`}.`,
  `# Set the fields marked ${FILL_IN} before running; the rest is the adapter's placement and a working default.`,
];

/** A YAML scalar: plain when it cannot be misread (names, paths, numbers), else double-quoted (JSON is valid YAML). */
function yamlValue(v: string | number | boolean): string {
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    // PyYAML (which LLaMA-Factory, Axolotl and MLX-LM read with) takes 1e-4 for a string: a float needs its dot.
    const t = String(v);
    return /e/.test(t) && !t.includes('.') ? t.replace('e', '.0e') : t;
  }
  return /^[A-Za-z0-9_./][A-Za-z0-9_./,-]*$/.test(v) && !/^(true|false|yes|no|on|off|null|~|[\d.]+)$/i.test(v) ? v : JSON.stringify(v);
}

/**
 * One word of a printed command, quoted for the shell of this platform (POSIX sh, or PowerShell on Windows). A word
 * no quoting makes safe to paste (a newline in a folder name) is refused as bad input naming it, before anything is
 * written.
 */
export function shellWord(s: string, shell: Shell = shellFor(process.platform)): string {
  try {
    return quoteWord(s, shell);
  } catch (e) {
    if (!(e instanceof UnquotableError)) throw e;
    throw new DomLoraError('bad-input', `${e.message}; rename it (or choose another --out) so that the printed commands can be pasted safely`, s);
  }
}

const gpuCount = (n: number) => `${n} GPU${n === 1 ? '' : 's'}`;

/** The learning rate the adapter was trained with (its provenance), else PEFT's usual LoRA default. */
function learningRate(metadata: Record<string, string>): number {
  const lr = Number(metadata['domlora.lr']);
  return Number.isFinite(lr) && lr > 0 ? lr : 1e-4;
}

function peftConfigPy(cfg: PeftConfig, p: Placement, gpus: number | undefined): string {
  const args: Record<string, unknown> = {
    r: cfg.r, lora_alpha: cfg.lora_alpha, lora_dropout: cfg.lora_dropout, target_modules: cfg.target_modules,
    layers_to_transform: cfg.layers_to_transform, bias: 'none', task_type: 'CAUSAL_LM',
    // GPT-2's Conv1D stores W as [in, out]; rsLoRA scales by alpha / sqrt(r): both change what the adapter computes.
    ...(cfg.fan_in_fan_out ? { fan_in_fan_out: true } : {}), ...(cfg.use_rslora ? { use_rslora: true } : {}),
  };
  return [...HEADER(p).slice(0, 1),
    '# Use it with PEFT (model = get_peft_model(AutoModelForCausalLM.from_pretrained(BASE), lora_config)) or pass',
    '# peft_config=lora_config to TRL\'s SFTTrainer or any PEFT trainer.',
    'from peft import LoraConfig', '',
    'lora_config = LoraConfig(', ...Object.entries(args).map(([k, v]) => `    ${k}=${pyValue(v)},`), ')', '',
    ...(gpus ? [`# On ${gpuCount(gpus)}: accelerate launch --num_processes ${gpus} YOUR_TRAIN_SCRIPT.py`] : []), ''].join('\n');
}

function axolotlYaml(cfg: PeftConfig, p: Placement, baseModel: string, lr: number): string {
  // lora_target_modules goes to PEFT's target_modules: kinds with peft_layers_to_transform for a product of kinds and
  // layers, else the full module names, which PEFT matches exactly.
  const [targets, layers] = !p.product ? [p.modules, null] : p.allLayers ? [p.kinds, null] : [p.kinds, p.layers];
  return [...HEADER(p),
    `base_model: ${yamlValue(baseModel)}`, 'adapter: lora',
    `lora_r: ${cfg.r}`, `lora_alpha: ${yamlValue(cfg.lora_alpha)}`, `lora_dropout: ${yamlValue(cfg.lora_dropout)}`,
    'lora_target_modules:', ...targets.map((k) => `  - ${yamlValue(k)}`),
    ...(layers ? ['peft_layers_to_transform:', ...layers.map((l) => `  - ${l}`)] : []),
    ...(cfg.fan_in_fan_out ? ['lora_fan_in_fan_out: true'] : []), ...(cfg.use_rslora ? ['peft_use_rslora: true'] : []),
    '', 'datasets:',
    `  - path: ${FILL_IN}  # your data file or Hugging Face dataset`,
    `    type: ${FILL_IN}  # its format: alpaca, chat_template, completion, ... (docs.axolotl.ai/docs/dataset-formats)`,
    `learning_rate: ${yamlValue(lr)}`, 'micro_batch_size: 1', 'gradient_accumulation_steps: 8', 'num_epochs: 1',
    `output_dir: ${yamlValue(`./outputs/${path.basename(baseModel)}-domlora`)}`, ''].join('\n');
}

function llamaFactoryYaml(cfg: PeftConfig, p: Placement, baseModel: string, lr: number): string {
  // lora_target goes to PEFT's target_modules as it is (for text models), and PEFT matches a full module name exactly,
  // so any placement is expressible: kinds when they cover every layer, else the modules by name.
  const target = p.allLayers && p.product ? p.kinds : p.modules;
  return [...HEADER(p),
    '### model', `model_name_or_path: ${yamlValue(baseModel)}`, '',
    '### method', 'stage: sft', 'do_train: true', 'finetuning_type: lora',
    `lora_rank: ${cfg.r}`, `lora_alpha: ${yamlValue(cfg.lora_alpha)}`, `lora_dropout: ${yamlValue(cfg.lora_dropout)}`,
    `lora_target: ${target.join(',')}`, ...(cfg.use_rslora ? ['use_rslora: true'] : []), '',
    '### dataset',
    `dataset: ${FILL_IN}  # a dataset name from data/dataset_info.json (add yours there; see data/README.md)`,
    `template: ${FILL_IN}  # the model's chat template name (llama3, qwen, mistral, ...; default for a base model)`, '',
    '### output', `output_dir: ${yamlValue(`saves/${path.basename(baseModel)}-domlora`)}`, '',
    '### train', 'per_device_train_batch_size: 1', 'gradient_accumulation_steps: 8', `learning_rate: ${yamlValue(lr)}`,
    'num_train_epochs: 1.0', ''].join('\n');
}

function mlxYaml(cfg: PeftConfig, p: Placement, baseModel: string, modelType: string, numLayers: number, lr: number): string {
  const lowest = p.layers[0]!;
  return [...HEADER(p),
    `model: ${yamlValue(baseModel)}`, 'train: true', 'fine_tune_type: lora',
    `data: ${FILL_IN}  # a folder with train.jsonl and valid.jsonl (mlx-lm's chat, completions or text records)`,
    '# Only the answers are supervised, as DomLoRA trained the adapter (set false for plain {"text"} records).',
    'mask_prompt: true',
    // MLX-LM adapts the last num_layers layers (-1: all); its keys are the module paths under a layer.
    `num_layers: ${p.allLayers ? -1 : numLayers - lowest}`,
    'lora_parameters:',
    `  keys: [${p.kinds.map((k) => JSON.stringify(archOf(modelType).modules.paths[k] ?? k)).join(', ')}]`,
    `  rank: ${cfg.r}`,
    // MLX-LM multiplies by `scale` itself: alpha / r, or alpha / sqrt(r) for rsLoRA.
    `  scale: ${yamlValue(loraScale(cfg.lora_alpha, cfg.r, Boolean(cfg.use_rslora)))}`,
    `  dropout: ${yamlValue(cfg.lora_dropout)}`,
    `learning_rate: ${yamlValue(lr)}`, 'batch_size: 4', 'iters: 1000', 'adapter_path: adapters', ''].join('\n');
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
  if (params.format === 'llamafactory' && !/\.ya?ml$/i.test(params.out)) {
    // llamafactory-cli reads its arguments from a file only when the name ends in .yaml or .yml.
    throw badInput('LLaMA-Factory reads a config only from a .yaml or .yml file (llamafactory-cli train FILE.yaml); name --out accordingly', path.resolve(params.out));
  }
  // The output is checked before the work, and replaced only when DomLoRA wrote it (runtime/outputs.ts).
  const claim = claimOutput(params.out, params.format === 'merged' ? 'merged' : 'config', { force: params.force, root: params.outRoot });
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
  const header = fs.existsSync(stFile) ? readHeader(stFile) : undefined;
  // Every command printed below is built before anything is written: a path that cannot be quoted stops the export here.
  const shell = shellFor(process.platform);
  const checks = runtimeChecks(peftCfg, folder.cfg.modelType, header ? [...header.tensors.keys()] : [], { adapterDir, shell });
  const outWord = params.format === 'merged' ? '' : shellWord(out, shell);
  const p = placementOf(peftCfg, folder.cfg.numLayers, folder.cfg.modelType);
  const scope: WriteScope = { root: params.outRoot };
  const baseModel = peftCfg.base_model_name_or_path || (params.modelDir ?? folder.dir);
  const gpus = params.gpus;
  const lr = learningRate(header?.metadata ?? {});
  const fill = (fields: string) => `fill in ${fields} (marked ${FILL_IN}), then`;
  const lines: string[] = [];
  switch (params.format) {
    case 'merged': {
      await exportMerged(adapterDir, folder, out, hooks, scope);
      lines.push(`merged model written to ${out} (W + (alpha/r) B A folded into the base weights)`);
      break;
    }
    case 'peft-config': {
      writeFileAtomic(out, peftConfigPy(peftCfg, p, gpus), scope);
      lines.push(`PEFT LoraConfig written to ${out}`,
        gpus ? `train on ${gpuCount(gpus)}: accelerate launch --num_processes ${gpus} YOUR_TRAIN_SCRIPT.py` : 'train: python YOUR_TRAIN_SCRIPT.py');
      break;
    }
    case 'axolotl': {
      writeFileAtomic(out, axolotlYaml(peftCfg, p, baseModel, lr), scope);
      lines.push(`Axolotl config written to ${out}`, `${fill('datasets')} train` + (gpus
        ? ` on ${gpuCount(gpus)}: axolotl train ${outWord} --launcher accelerate -- --num_processes=${gpus}`
        : `: axolotl train ${outWord}`));
      break;
    }
    case 'llamafactory': {
      writeFileAtomic(out, llamaFactoryYaml(peftCfg, p, baseModel, lr), scope);
      // llamafactory-cli trains on every visible GPU by itself; a count is set with NPROC_PER_NODE (and one GPU by
      // hiding the others).
      const env: Record<string, string> = gpus === undefined ? {} : gpus === 1 ? { CUDA_VISIBLE_DEVICES: '0' } : { FORCE_TORCHRUN: '1', NPROC_PER_NODE: String(gpus) };
      lines.push(`LLaMA-Factory config written to ${out}`,
        `${fill('dataset and template')} train${gpus ? ` on ${gpuCount(gpus)}` : ''}: ${withEnv(env, `llamafactory-cli train ${outWord}`, shell)}`);
      break;
    }
    case 'mlx': {
      const L = folder.cfg.numLayers;
      const top = p.layers.length === L - p.layers[0]! && p.layers.every((l, i) => l === p.layers[0]! + i);
      if (!p.product || !top) {
        throw badInput(`MLX-LM adapts the same module paths in each of the last N layers (num_layers), which cannot express ${p.modules.length === 1 ? p.modules[0] : `this placement (${p.modules.join(', ')})`} in a ${L}-layer model; ` +
          'an MLX config would train a different placement. Use --format peft-config, or train with DomLoRA and convert the PEFT adapter.');
      }
      writeFileAtomic(out, mlxYaml(peftCfg, p, baseModel, folder.cfg.modelType, L, lr), scope);
      lines.push(`MLX-LM config written to ${out}`, `${fill('data')} train: mlx_lm.lora --config ${outWord}` +
        (gpus ? ` (--gpus does not apply: MLX trains on one Apple-silicon machine)` : ''));
      break;
    }
    default:
      throw badInput(`--format must be one of merged, peft-config, axolotl, llamafactory, mlx; got "${params.format as string}"`);
  }
  if (checks.warnings.length) lines.push('', 'Downstream runtimes:', ...checks.warnings.map((w) => `  ! ${w}`));
  lines.push('', 'Load the adapter with:', ...checks.loadCommands.map((c) => `  ${c}`));
  return { format: params.format, out, text: lines.join('\n'), warnings: checks.warnings, loadCommands: checks.loadCommands };
}

function pyValue(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (Array.isArray(v)) return `[${v.map(pyValue).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** Folds W + (alpha / r) B A into a copy of the base model, tensor by tensor. */
async function exportMerged(adapterDir: string, folder: ModelFolder, out: string, hooks: JobHooks, scope: WriteScope): Promise<void> {
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
  }, scope);
}
