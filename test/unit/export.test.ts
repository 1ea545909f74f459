// The trainer exports, read as the trainers read them: each file is parsed by the parser its tool uses
// (test/helpers/read_config.py), every key the tool requires is there, the only values left to the user are the ones
// marked FILL_IN, and the modules the tool would adapt (matched the way PEFT and MLX-LM match them) are exactly the
// adapter's, for one module, vanilla LoRA, a block of layers and a placement that is no product of kinds and layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { runExport } from '../../src/engine/export/exporters';
import { buildPeftConfig, writeAdapterFiles } from '../../src/engine/export/peft';
import { openModelFolder } from '../../src/engine/hf/folder';
import { candidateModules, type ModuleSpec } from '../../src/engine/hf/modules';
import { writeSynthModel } from '../../src/engine/hf/synth';
import { DomLoraError } from '../../src/engine/runtime/errors';
import type { ExportParams } from '../../src/protocol/messages';
import { STORIES, tmpDir } from '../helpers/reference';

type Obj = Record<string, unknown>;

/** The file as its tool reads it (PyYAML for the YAML configs, Python's own parser for the LoraConfig). */
function readConfig(file: string): Obj {
  const r = spawnSync('/usr/bin/python3', [path.resolve('test/helpers/read_config.py'), file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${file} does not parse: ${r.stderr}`);
  return JSON.parse(r.stdout) as Obj;
}

/** Every path in the parsed config whose value is the FILL_IN marker. */
function fillIns(v: unknown, at = ''): string[] {
  if (v === 'FILL_IN') return [at];
  if (Array.isArray(v)) return v.flatMap((x, i) => fillIns(x, `${at}[${i}]`));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => fillIns(x, at ? `${at}.${k}` : k));
  return [];
}

/**
 * The modules PEFT adapts (peft.tuners.tuners_utils.check_target_module_exists): a key named in target_modules is
 * taken as it is; otherwise one ending in ".<target>", restricted to layers_to_transform by the number after the
 * second-to-last dotted name before it when layers_pattern is unset.
 */
function peftMatches(universe: string[], targets: string[], layers: number[] | null | undefined): string[] {
  return universe.filter((key) => {
    if (targets.includes(key)) return true;
    if (!targets.some((t) => key.endsWith(`.${t}`))) return false;
    if (!layers || layers.length === 0) return true;
    const m = /^.*\.[^.]*\.(\d+)\./.exec(key);
    return m !== null && layers.includes(Number(m[1]));
  });
}

/** The modules MLX-LM adapts (mlx_lm.tuner.utils.linear_to_lora_layers): `keys` in each of the last num_layers layers. */
function mlxMatches(universe: string[], numLayers: number, modelLayers: number, keys: string[]): string[] {
  const from = numLayers < 0 ? 0 : modelLayers - numLayers;
  return universe.filter((name) => {
    const m = /\.(\d+)\.(.+)$/.exec(name);
    return m !== null && Number(m[1]) >= from && keys.includes(m[2]!);
  });
}

const sorted = (xs: string[]) => [...xs].sort();

/** An adapter folder for `names` of the model in `modelDir` (random A and B: exports read only names and shapes). */
function makeAdapter(dir: string, modelDir: string, names: string[], opts: { rslora?: boolean } = {}): { dir: string; specs: ModuleSpec[] } {
  const folder = openModelFolder(modelDir);
  const all = new Map(candidateModules(folder.cfg).map((s) => [s.name, s]));
  const specs = names.map((n) => all.get(n)!);
  const cfg = buildPeftConfig(specs, folder.cfg.numLayers, 8, 16, modelDir);
  if (opts.rslora) cfg.use_rslora = true;
  fs.mkdirSync(dir, { recursive: true });
  writeAdapterFiles(dir, specs.map((spec) => ({ spec, a: new Float32Array(8 * spec.dIn).fill(0.01), b: new Float32Array(spec.dOut * 8).fill(0.02) })),
    cfg, { 'domlora.lr': '0.002' });
  return { dir, specs };
}

async function badInput(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof DomLoraError && e.code === 'bad-input' && re.test(e.message));
}

const stories = openModelFolder(STORIES);
const UNIVERSE = [...candidateModules(stories.cfg).map((s) => s.name), 'model.embed_tokens', 'lm_head', 'model.layers.1.mlp', 'model.layers.1.self_attn'];
const L = stories.cfg.numLayers;
const ATTENTION = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
const KINDS = [...ATTENTION, 'gate_proj', 'up_proj', 'down_proj'];
const PLACEMENTS: { name: string; modules: string[]; rslora?: boolean; mlx: boolean }[] = [
  { name: 'one module', modules: ['model.layers.1.mlp.down_proj'], mlx: false },
  { name: 'vanilla LoRA', modules: KINDS.flatMap((k) => Array.from({ length: L }, (_, l) => `model.layers.${l}.${ATTENTION.includes(k) ? 'self_attn' : 'mlp'}.${k}`)), mlx: true },
  { name: 'two kinds on the top two layers', modules: ['model.layers.3.self_attn.q_proj', 'model.layers.3.self_attn.v_proj', 'model.layers.4.self_attn.q_proj', 'model.layers.4.self_attn.v_proj'], mlx: true },
  { name: 'no product of kinds and layers', modules: ['model.layers.3.self_attn.v_proj', 'model.layers.1.mlp.down_proj'], mlx: false },
  { name: 'the top layer, rsLoRA', modules: ['model.layers.4.mlp.down_proj'], rslora: true, mlx: true },
];

for (const placement of PLACEMENTS) {
  test(`exports of ${placement.name}: each tool's required keys, only the data left to fill in, exactly the adapter's modules`, async () => {
    const dir = tmpDir();
    const { dir: adapter } = makeAdapter(path.join(dir, 'adapter'), STORIES, placement.modules, { rslora: placement.rslora });
    const want = sorted(placement.modules);
    const exp = (format: ExportParams['format'], file: string, extra: Partial<ExportParams> = {}) =>
      runExport({ adapterDir: adapter, format, out: path.join(dir, file), modelDir: STORIES, ...extra });

    // PEFT: a Python module whose LoraConfig takes only LoraConfig's own fields.
    const pc = await exp('peft-config', 'lora_config.py');
    const k = readConfig(pc.out);
    const LORA_FIELDS = ['r', 'lora_alpha', 'lora_dropout', 'target_modules', 'layers_to_transform', 'layers_pattern', 'bias', 'task_type',
      'fan_in_fan_out', 'use_rslora', 'modules_to_save', 'init_lora_weights', 'use_dora', 'rank_pattern', 'alpha_pattern'];
    for (const key of Object.keys(k)) assert.ok(LORA_FIELDS.includes(key), `LoraConfig has no field ${key}`);
    assert.equal(k.r, 8);
    assert.equal(k.lora_alpha, 16);
    assert.equal(k.task_type, 'CAUSAL_LM');
    assert.equal(k.use_rslora, placement.rslora ? true : undefined);
    assert.deepEqual(sorted(peftMatches(UNIVERSE, k.target_modules as string[], k.layers_to_transform as number[] | null)), want);

    // Axolotl: its schema's required learning_rate, a dataset to fill in, and PEFT's matching of lora_target_modules.
    const ax = await exp('axolotl', 'axolotl.yml');
    const a = readConfig(ax.out);
    for (const key of ['base_model', 'adapter', 'lora_r', 'lora_alpha', 'lora_target_modules', 'datasets', 'learning_rate', 'output_dir']) assert.ok(key in a, `axolotl: ${key}`);
    assert.equal(a.adapter, 'lora');
    assert.equal(a.base_model, STORIES);
    assert.equal(a.learning_rate, 0.002, 'the rate the adapter was trained with, read as a number');
    assert.deepEqual(fillIns(a), ['datasets[0].path', 'datasets[0].type']);
    assert.equal(a.peft_use_rslora, placement.rslora ? true : undefined);
    assert.deepEqual(sorted(peftMatches(UNIVERSE, a.lora_target_modules as string[], a.peft_layers_to_transform as number[] | undefined)), want);
    assert.match(ax.text, new RegExp(`fill in datasets \\(marked FILL_IN\\), then train: axolotl train ${ax.out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n`));
    assert.doesNotMatch(ax.text, /axolotl\.cli\.train|GPU/);

    // LLaMA-Factory: runnable as `llamafactory-cli train FILE.yaml` once dataset and template are set; lora_target is
    // handed to PEFT's target_modules as it is.
    const lf = await exp('llamafactory', 'llamafactory.yaml');
    const f = readConfig(lf.out);
    for (const key of ['model_name_or_path', 'stage', 'do_train', 'finetuning_type', 'lora_rank', 'lora_target', 'dataset', 'template', 'output_dir']) {
      assert.ok(key in f, `llamafactory: ${key}`);
    }
    assert.equal(f.stage, 'sft');
    assert.equal(f.do_train, true);
    assert.equal(f.finetuning_type, 'lora');
    assert.equal(f.lora_rank, 8);
    assert.equal(f.lora_alpha, 16);
    assert.deepEqual(fillIns(f), ['dataset', 'template']);
    const targets = String(f.lora_target).split(',').map((t) => t.trim());
    assert.deepEqual(sorted(peftMatches(UNIVERSE, targets, null)), want);
    assert.match(lf.text, /fill in dataset and template \(marked FILL_IN\), then train: llamafactory-cli train \S+llamafactory\.yaml\n/);

    // MLX-LM: the last num_layers layers only, so a placement lower down is refused rather than widened.
    if (placement.mlx) {
      const mx = await exp('mlx', 'mlx.yaml');
      const m = readConfig(mx.out);
      const lp = m.lora_parameters as Obj;
      for (const key of ['model', 'train', 'fine_tune_type', 'data', 'num_layers']) assert.ok(key in m, `mlx: ${key}`);
      for (const key of ['keys', 'rank', 'scale', 'dropout']) assert.ok(key in lp, `mlx lora_parameters: ${key}`);
      assert.equal(m.train, true);
      assert.equal(m.mask_prompt, true);
      assert.equal(lp.rank, 8);
      assert.equal(lp.scale, placement.rslora ? 16 / Math.sqrt(8) : 2);
      assert.deepEqual(fillIns(m), ['data']);
      assert.deepEqual(sorted(mlxMatches(UNIVERSE, m.num_layers as number, L, lp.keys as string[])), want);
      assert.match(mx.text, /then train: mlx_lm\.lora --config \S+mlx\.yaml/);
    } else {
      await badInput(exp('mlx', 'mlx.yaml'), /MLX-LM adapts the same module paths in each of the last N layers/);
      assert.ok(!fs.existsSync(path.join(dir, 'mlx.yaml')), 'nothing written');
    }
  });
}

test('GPT-2 (Conv1D): fan_in_fan_out in PEFT and Axolotl, group-qualified kinds that match only the MLP projection', async () => {
  const dir = tmpDir();
  const model = path.join(dir, 'gpt2');
  await writeSynthModel(model, { hiddenSize: 32, intermediateSize: 64, layers: 3, heads: 4, kvHeads: 4, vocabSize: 384, tied: true, seed: 8, arch: 'gpt2' });
  const universe = candidateModules(openModelFolder(model).cfg).map((s) => s.name);
  const { dir: adapter } = makeAdapter(path.join(dir, 'adapter'), model, ['transformer.h.1.mlp.c_proj']);
  const want = ['transformer.h.1.mlp.c_proj'];
  const pc = readConfig((await runExport({ adapterDir: adapter, format: 'peft-config', out: path.join(dir, 'c.py'), modelDir: model })).out);
  assert.equal(pc.fan_in_fan_out, true);
  assert.deepEqual(peftMatches(universe, pc.target_modules as string[], pc.layers_to_transform as number[]), want);
  const ax = readConfig((await runExport({ adapterDir: adapter, format: 'axolotl', out: path.join(dir, 'a.yml'), modelDir: model })).out);
  assert.equal(ax.lora_fan_in_fan_out, true);
  assert.deepEqual(peftMatches(universe, ax.lora_target_modules as string[], ax.peft_layers_to_transform as number[]), want);
  const lf = readConfig((await runExport({ adapterDir: adapter, format: 'llamafactory', out: path.join(dir, 'l.yaml'), modelDir: model })).out);
  assert.deepEqual(peftMatches(universe, String(lf.lora_target).split(','), null), want);
});

// SmolLM3, OLMo 2 and Granite name their projections as Llama does; OLMo 2's q_norm / k_norm and post-block norms sit
// beside them under the same parents, and no trainer's target may reach them.
for (const arch of ['smollm3', 'olmo2', 'granite'] as const) {
  test(`${arch}: every trainer's export adapts exactly the adapter's modules, never a norm beside them`, async () => {
    const dir = tmpDir();
    const model = path.join(dir, arch);
    await writeSynthModel(model, { hiddenSize: 32, intermediateSize: 48, layers: 3, heads: 4, kvHeads: 2, vocabSize: 384, tied: arch === 'smollm3', seed: 9, arch });
    const folder = openModelFolder(model);
    const norms = folder.store.names.filter((n) => /norm\.weight$/.test(n)).map((n) => n.slice(0, -'.weight'.length));
    assert.ok(norms.some((n) => (arch === 'olmo2' ? /self_attn\.q_norm$/ : /input_layernorm$/).test(n)), `${arch}: the norms are in the universe`);
    const universe = [...candidateModules(folder.cfg).map((s) => s.name), ...norms, 'model.embed_tokens', 'lm_head'];
    // The top layer's o_proj and down_proj: a product of kinds and layers that MLX-LM can say too.
    const want = ['model.layers.2.mlp.down_proj', 'model.layers.2.self_attn.o_proj'];
    const { dir: adapter } = makeAdapter(path.join(dir, 'adapter'), model, want);
    const exp = async (format: ExportParams['format'], file: string) => {
      const r = await runExport({ adapterDir: adapter, format, out: path.join(dir, file), modelDir: model });
      return { r, cfg: readConfig(r.out) };
    };
    const pc = (await exp('peft-config', 'c.py')).cfg;
    assert.deepEqual(sorted(pc.target_modules as string[]), ['down_proj', 'o_proj']);
    assert.equal(pc.fan_in_fan_out, undefined);
    assert.deepEqual(sorted(peftMatches(universe, pc.target_modules as string[], pc.layers_to_transform as number[])), want);
    const ax = (await exp('axolotl', 'a.yml')).cfg;
    assert.deepEqual(sorted(peftMatches(universe, ax.lora_target_modules as string[], ax.peft_layers_to_transform as number[])), want);
    const lf = await exp('llamafactory', 'l.yaml');
    assert.deepEqual(sorted(peftMatches(universe, String(lf.cfg.lora_target).split(',').map((t) => t.trim()), null)), want);
    const mx = (await exp('mlx', 'm.yaml')).cfg;
    const lp = mx.lora_parameters as Obj;
    assert.deepEqual(sorted(mlxMatches(universe, mx.num_layers as number, 3, lp.keys as string[])), want);
    // Ollama imports safetensors adapters for Llama, Mistral and Gemma only: these say to go through llama.cpp.
    const ollama = lf.r.warnings.find((w) => w.startsWith('Ollama imports safetensors adapters only for '));
    assert.ok(ollama && !ollama.split(';')[0]!.split(/[ ,]+/).includes(arch) && /convert with llama\.cpp/.test(ollama), lf.r.warnings.join('\n'));
  });
}

test('launch lines: no GPU count unless --gpus is given, singular for one; a LLaMA-Factory config must be a .yaml file', async () => {
  const dir = tmpDir();
  const { dir: adapter } = makeAdapter(path.join(dir, 'adapter'), STORIES, ['model.layers.1.mlp.down_proj']);
  const exp = (format: ExportParams['format'], file: string, gpus?: number) =>
    runExport({ adapterDir: adapter, format, out: path.join(dir, file), modelDir: STORIES, ...(gpus === undefined ? {} : { gpus }) });

  const none = await exp('peft-config', 'a.py');
  assert.doesNotMatch(none.text, /GPU|num_processes/);
  assert.doesNotMatch(fs.readFileSync(none.out, 'utf8'), /GPU|num_processes/);
  assert.match((await exp('peft-config', 'b.py', 1)).text, /train on 1 GPU: accelerate launch --num_processes 1 /);
  const two = await exp('peft-config', 'c.py', 2);
  assert.match(two.text, /train on 2 GPUs: accelerate launch --num_processes 2 /);
  assert.match(fs.readFileSync(two.out, 'utf8'), /# On 2 GPUs: accelerate launch --num_processes 2 /);

  assert.match((await exp('axolotl', 'a.yml', 4)).text, /train on 4 GPUs: axolotl train \S+a\.yml --launcher accelerate -- --num_processes=4\n/);
  assert.match((await exp('llamafactory', 'a.yaml', 1)).text, /train on 1 GPU: CUDA_VISIBLE_DEVICES=0 llamafactory-cli train \S+a\.yaml\n/);
  assert.match((await exp('llamafactory', 'b.yml', 3)).text, /train on 3 GPUs: FORCE_TORCHRUN=1 NPROC_PER_NODE=3 llamafactory-cli train \S+b\.yml\n/);
  assert.doesNotMatch((await exp('llamafactory', 'c.yaml')).text, /GPU|NPROC/);

  await badInput(exp('llamafactory', 'lf.cfg'), /LLaMA-Factory reads a config only from a \.yaml or \.yml file/);
  assert.ok(!fs.existsSync(path.join(dir, 'lf.cfg')));
  for (const gpus of [0, -1, 1.5]) await badInput(exp('axolotl', `g${gpus}.yml`, gpus), /--gpus must be an integer from 1 to 4096, got/);
});
