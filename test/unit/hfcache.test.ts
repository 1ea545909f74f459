// The Hugging Face cache: where it is, what `domlora models` lists (from headers alone), and that a snapshot's
// folder of symbolic links, sharded or not, loads like any model folder. The cache is built here (test/helpers/hfcache.ts):
// a real small model in two revisions (one sharded), an unfinished download, a GGUF-only repository, an unsupported
// architecture, a snapshot without tokenizer.json, and sparse snapshots of real large layouts (Mistral-Nemo's head_dim).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hubCacheDir, listModels } from '../../src/engine/hf/cache';
import { modelInfo } from '../../src/engine/hf/folder';
import { hfSnapshotOf, type ModelEntry, type ModelsResult } from '../../src/protocol/messages';
import { SUPPORTED_MODEL_TYPES } from '../../src/engine/arch/registry';
import { defaultAdapterDir } from '../../src/cli/models';
import { formatBytes, formatParams } from '../../src/protocol/format';
import type { SynthShape } from '../../src/engine/arch/types';
import { addSnapshot, folderFiles, repoFolder, safetensorsHeader, shardedWeights, sparseModelFiles, touch } from '../helpers/hfcache';

const ROOT = process.cwd();
const CLI = path.join(ROOT, 'dist/cli.js');
const STORIES = path.join(ROOT, 'test/fixtures/models/stories260K');
const GOLDEN = JSON.parse(fs.readFileSync(path.join(STORIES, 'golden_reference.json'), 'utf8'));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-hfcache-'));
const cache = path.join(tmp, 'hub');
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const OLD = '1111111111111111111111111111111111111111';
const NEW = '2222222222222222222222222222222222222222';
const REV = '3333333333333333333333333333333333333333';
let oldSnap = '';
let newSnap = '';

// Mistral-Nemo-Base-2407's layout: head_dim 128, while hidden_size / num_attention_heads = 5120 / 32 = 160.
const NEMO: SynthShape = {
  arch: 'mistral', hiddenSize: 5120, intermediateSize: 14336, layers: 40, heads: 32, kvHeads: 8, headDim: 128,
  vocabSize: 131072, tied: false, seed: 0, dtype: 'BF16',
};
/** Its parameters as published (model card and safetensors index): 12,247,782,400. */
const NEMO_PARAMS = 12_247_782_400;

before(() => {
  // A real model in two revisions: the old one a single file, the current one (refs/main) in two shards. The config
  // and tokenizer files are the same bytes in both, so both snapshots link to the same blobs.
  oldSnap = addSnapshot(cache, 'domlora-test/stories260K', OLD, folderFiles(STORIES));
  touch(oldSnap, 3600);
  newSnap = addSnapshot(cache, 'domlora-test/stories260K', NEW,
    [...folderFiles(STORIES, ['model.safetensors']), ...shardedWeights(STORIES, 2)], ['main']);
  // An interrupted download: the index names two shards, the second is still a .incomplete blob with no link.
  const shards = shardedWeights(STORIES, 2);
  addSnapshot(cache, 'domlora-test/broken-download', REV, [
    ...folderFiles(STORIES, ['model.safetensors']), shards[0]!, shards[2]!, { ...shards[1]!, bytes: (shards[1]!.bytes as Buffer).subarray(0, 100), incomplete: true },
  ], ['main']);
  // GGUF only, as the quantised repositories are: no config.json, no safetensors.
  addSnapshot(cache, 'TheBloke/stories260K-GGUF', REV, [
    { name: 'README.md', bytes: '# GGUF\n' }, { name: 'stories260K.Q8_0.gguf', bytes: Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(2044)]) },
  ], ['main']);
  // An architecture the engine does not run.
  const t5 = safetensorsHeader([{ name: 'shared.weight', shape: [32128, 512] }, { name: 'encoder.final_layer_norm.weight', shape: [512] }], 'F32');
  addSnapshot(cache, 'google-t5/t5-small', REV, [
    { name: 'config.json', bytes: JSON.stringify({ model_type: 't5', architectures: ['T5ForConditionalGeneration'], d_model: 512 }) },
    { name: 'model.safetensors', bytes: t5.header, sparseSize: t5.size }, { name: 'tokenizer.json', bytes: '{}' },
  ], ['main']);
  // A SentencePiece model file but no tokenizer.json.
  addSnapshot(cache, 'domlora-test/no-tokenizer', REV, [
    ...folderFiles(STORIES, ['tokenizer.json']), { name: 'tokenizer.model', bytes: 'sentencepiece' },
  ], ['main']);
  // Sparse snapshots of a real large layout: with its head_dim, and with the head_dim left out of the config.
  addSnapshot(cache, 'mistralai/Mistral-Nemo-Base-2407', REV, sparseModelFiles(NEMO, 5), ['main']);
  addSnapshot(cache, 'domlora-test/nemo-without-head-dim', REV, sparseModelFiles(NEMO, 5, { config: { head_dim: undefined } }), ['main']);
  // Not models: a dataset repository and a stray file.
  addSnapshot(path.join(cache), 'x/y', REV, [{ name: 'data.csv', bytes: 'a,b\n' }]);
  fs.renameSync(repoFolder(cache, 'x/y'), path.join(cache, 'datasets--x--y'));
  fs.writeFileSync(path.join(cache, 'version.txt'), '1');
});

function byRepo(r: ModelsResult, repoId: string): ModelEntry[] {
  return r.models.filter((m) => m.repoId === repoId);
}

test('the cache is found where huggingface_hub puts it', () => {
  const home = '/home/u';
  assert.deepEqual(hubCacheDir({}, home), { dir: '/home/u/.cache/huggingface/hub', from: 'default' });
  assert.deepEqual(hubCacheDir({ XDG_CACHE_HOME: '/xdg' }, home), { dir: '/xdg/huggingface/hub', from: 'XDG_CACHE_HOME' });
  assert.deepEqual(hubCacheDir({ XDG_CACHE_HOME: '/xdg', HF_HOME: '~/hf' }, home), { dir: '/home/u/hf/hub', from: 'HF_HOME' });
  assert.deepEqual(hubCacheDir({ HF_HOME: '/hf', HUGGINGFACE_HUB_CACHE: '/old' }, home), { dir: '/old', from: 'HUGGINGFACE_HUB_CACHE' });
  assert.deepEqual(hubCacheDir({ HF_HOME: '/hf', HUGGINGFACE_HUB_CACHE: '/old', HF_HUB_CACHE: '/new' }, home), { dir: '/new', from: 'HF_HUB_CACHE' });
  assert.deepEqual(hubCacheDir({ HF_HUB_CACHE: '', HF_HOME: '/hf' }, home), { dir: '/hf/hub', from: 'HF_HOME' }, 'an empty variable is unset');
});

test('a snapshot path names its repository and revision; other paths name none', () => {
  assert.deepEqual(hfSnapshotOf('/c/hub/models--Qwen--Qwen3-0.6B/snapshots/abc123'),
    { cacheDir: '/c/hub', repoId: 'Qwen/Qwen3-0.6B', folderName: 'Qwen--Qwen3-0.6B', revision: 'abc123' });
  assert.equal(hfSnapshotOf('C:\\Users\\u\\.cache\\huggingface\\hub\\models--gpt2\\snapshots\\e7da7f2\\')?.repoId, 'gpt2');
  assert.equal(hfSnapshotOf('/c/hub/models--Qwen--Qwen3-0.6B/snapshots/abc123/onnx'), undefined);
  assert.equal(hfSnapshotOf('/work/models/tiny'), undefined);
  assert.equal(hfSnapshotOf('/c/hub/datasets--x--y/snapshots/abc'), undefined);
});

test('models lists every snapshot, the current revision first, with the reason a model cannot be probed', () => {
  const r = listModels({ cacheDir: cache });
  assert.ok(r.cache?.exists);
  assert.equal(r.cache.from, 'option');
  assert.equal(r.cache.repos, 7, 'datasets and stray files are not model repositories');
  assert.equal(r.models.length, 8);
  assert.ok(r.models.every((m) => m.source === 'cache'));

  const stories = byRepo(r, 'domlora-test/stories260K');
  assert.deepEqual(stories.map((m) => [m.revision, m.current, m.refs]), [[NEW, true, ['main']], [OLD, false, []]]);
  const info = modelInfo(STORIES);
  for (const m of stories) {
    assert.equal(m.supported, true, `${m.revision}: ${m.reason}`);
    assert.equal(m.modelType, 'llama');
    assert.equal(m.architecture, 'LlamaForCausalLM');
    assert.equal(m.parameters, info.model.parameters);
    assert.equal(m.layers, info.model.layers);
    assert.equal(m.dtype, info.dtype);
  }
  assert.equal(stories[0]!.path, newSnap);
  assert.equal(stories[1]!.path, oldSnap);

  const reason = (repo: string) => byRepo(r, repo)[0]!.reason ?? '';
  assert.match(reason('domlora-test/broken-download'),
    /^incomplete download: 1 of 2 weight shards missing \(model-00002-of-00002\.safetensors\) \(1 unfinished download in the repository's blobs\/\)$/);
  assert.match(reason('TheBloke/stories260K-GGUF'), /^GGUF only \(stories260K\.Q8_0\.gguf\): that is llama\.cpp's format/);
  assert.equal(reason('google-t5/t5-small'), `model_type "t5" is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  assert.match(reason('domlora-test/no-tokenizer'), /^no tokenizer\.json: only SentencePiece's tokenizer\.model/);
  for (const repo of ['domlora-test/broken-download', 'TheBloke/stories260K-GGUF', 'google-t5/t5-small', 'domlora-test/no-tokenizer']) {
    assert.equal(byRepo(r, repo)[0]!.supported, false, repo);
    assert.ok(!reason(repo).includes('\n'), 'one line');
  }
  // An unsupported architecture still shows what its headers say.
  const t5 = byRepo(r, 'google-t5/t5-small')[0]!;
  assert.equal(t5.parameters, 32128 * 512 + 512);
  assert.equal(t5.dtype, 'F32');
  assert.equal(t5.architecture, 'T5ForConditionalGeneration');
});

test('a head_dim that is not hidden_size / num_attention_heads (Mistral-Nemo) is read from the config', () => {
  const r = listModels({ cacheDir: cache });
  const nemo = byRepo(r, 'mistralai/Mistral-Nemo-Base-2407')[0]!;
  assert.equal(nemo.supported, true, nemo.reason);
  assert.equal(nemo.modelType, 'mistral');
  assert.equal(nemo.parameters, NEMO_PARAMS);
  assert.equal(nemo.dtype, 'BF16');
  assert.equal(nemo.layers, 40);
  // q_proj is [32 x 128, 5120]; without head_dim the config implies [5120, 5120], and the listing says so.
  const without = byRepo(r, 'domlora-test/nemo-without-head-dim')[0]!;
  assert.equal(without.supported, false);
  assert.equal(without.reason, 'tensor "model.layers.0.self_attn.q_proj.weight" has shape [4096,5120], config.json implies [5120,5120]');
  assert.equal(without.parameters, NEMO_PARAMS, 'the headers still count the weights');
});

test('size on disk counts allocated blocks, each blob once; the apparent size is reported beside it', () => {
  const r = listModels({ cacheDir: cache });
  // What du would say for every blob that a snapshot links to, counted independently of the engine.
  let expected = 0;
  for (const repo of fs.readdirSync(cache).filter((n) => n.startsWith('models--'))) {
    const blobs = path.join(cache, repo, 'blobs');
    for (const b of fs.readdirSync(blobs).filter((n) => !n.endsWith('.incomplete'))) expected += fs.statSync(path.join(blobs, b)).blocks * 512;
  }
  assert.equal(r.cache!.diskBytes, expected);
  // The two revisions of stories260K share their config and tokenizer blobs: each snapshot counts them, the cache once.
  const [current, old] = byRepo(r, 'domlora-test/stories260K');
  const blocks = (f: string) => fs.statSync(f).blocks * 512;
  const repoBlobs = path.join(repoFolder(cache, 'domlora-test/stories260K'), 'blobs');
  const repoTotal = fs.readdirSync(repoBlobs).reduce((s, b) => s + blocks(path.join(repoBlobs, b)), 0);
  const sharedNames = fs.readdirSync(oldSnap).filter((n) => fs.existsSync(path.join(newSnap, n))
    && fs.realpathSync(path.join(oldSnap, n)) === fs.realpathSync(path.join(newSnap, n)));
  assert.ok(sharedNames.includes('tokenizer.json') && !sharedNames.includes('model.safetensors'), sharedNames.join());
  const sharedBytes = sharedNames.reduce((s, n) => s + blocks(path.join(newSnap, n)), 0);
  assert.equal(current!.diskBytes + old!.diskBytes, repoTotal + sharedBytes);
  assert.equal(current!.bytes, fs.readdirSync(newSnap).reduce((s, n) => s + fs.statSync(path.join(newSnap, n)).size, 0));
  const nemo = byRepo(r, 'mistralai/Mistral-Nemo-Base-2407')[0]!;
  assert.ok(nemo.bytes > 24e9, `the apparent size is the layout's (${nemo.bytes})`);
  assert.ok(nemo.diskBytes < 2e6, `the sparse shards occupy little (${nemo.diskBytes})`);
});

test('given folders are listed after the cache; a missing cache is said, not an error', () => {
  const r = listModels({ cacheDir: path.join(tmp, 'nowhere'), folders: [STORIES, path.join(tmp, 'gone'), newSnap] });
  assert.deepEqual(r.cache && { exists: r.cache.exists, repos: r.cache.repos }, { exists: false, repos: 0 });
  assert.deepEqual(r.models.map((m) => [m.source, m.supported, m.reason]), [['folder', true, undefined], ['folder', false, 'does not exist'], ['folder', true, undefined]]);
  assert.equal(r.models[2]!.repoId, 'domlora-test/stories260K', 'a snapshot given as a folder is named by its repository');
  assert.equal(listModels({ noCache: true, folders: [STORIES] }).cache, undefined);
});

test('the CLI puts the adapter of a cache model in the current folder, never in the cache', () => {
  assert.equal(defaultAdapterDir(newSnap, 'domlora'), path.resolve('domlora-test--stories260K-domlora-adapter'));
  // Any other model's adapter goes to the current folder too, never beside the model (a shared or read-only place).
  assert.equal(defaultAdapterDir('/m/tiny', 'vanilla'), path.resolve('tiny-vanilla-adapter'));
  assert.equal(defaultAdapterDir('/m/tiny', 'domlora', '/work/here'), '/work/here/tiny-domlora-adapter');
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(24_495_000_000), '24.5 GB');
  assert.equal(formatParams(NEMO_PARAMS), '12.2B');
  assert.equal(formatParams(260_000), '260K');
});

test('a listing of about 250 GB of large snapshots reads headers only', () => {
  const big = path.join(tmp, 'big-hub');
  const shapes: [string, SynthShape, number][] = [
    ['meta-llama/Llama-3.1-8B', { hiddenSize: 4096, intermediateSize: 14336, layers: 32, heads: 32, kvHeads: 8, vocabSize: 128256, tied: false, seed: 0, dtype: 'BF16' }, 4],
    ['mistralai/Mistral-Nemo-Base-2407', NEMO, 5],
    ['Qwen/Qwen3-32B', { arch: 'qwen3', hiddenSize: 5120, intermediateSize: 25600, layers: 64, heads: 64, kvHeads: 8, headDim: 128, vocabSize: 151936, tied: false, seed: 0, dtype: 'BF16' }, 17],
    ['meta-llama/Llama-3.1-70B', { hiddenSize: 8192, intermediateSize: 28672, layers: 80, heads: 64, kvHeads: 8, vocabSize: 128256, tied: false, seed: 0, dtype: 'BF16' }, 30],
  ];
  for (const [repo, shape, shards] of shapes) addSnapshot(big, repo, REV, sparseModelFiles(shape, shards), ['main']);
  const t0 = performance.now();
  const r = listModels({ cacheDir: big });
  const ms = performance.now() - t0;
  const apparent = r.models.reduce((s, m) => s + m.bytes, 0);
  assert.ok(r.models.every((m) => m.supported), r.models.map((m) => m.reason).join('; '));
  assert.ok(apparent > 240e9, `about 250 GB on paper (${apparent})`);
  // Reading the data sections, even as holes, takes far longer than this.
  assert.ok(ms < 5000, `listed in ${ms.toFixed(0)} ms`);
  console.log(`# models: ${r.models.length} snapshots, ${formatBytes(apparent)} apparent, ${formatBytes(r.cache!.diskBytes)} on disk, listed in ${ms.toFixed(0)} ms`);
  // The published parameter counts; Qwen3-32B's head_dim (128) is not 5120 / 64 either.
  assert.deepEqual(r.models.map((m) => [m.repoId, m.parameters]), [
    ['meta-llama/Llama-3.1-70B', 70_553_706_496], ['meta-llama/Llama-3.1-8B', 8_030_261_248],
    ['mistralai/Mistral-Nemo-Base-2407', NEMO_PARAMS], ['Qwen/Qwen3-32B', 32_762_123_264],
  ]);
});

// ---- The CLI ------------------------------------------------------------------------------------------------------

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: ROOT, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, HF_HUB_CACHE: cache, DOMLORA_BACKEND: 'wasm', DOMLORA_DEBUG: '', NO_COLOR: '1', ...env },
  });
  assert.equal(r.error, undefined);
  return r;
}

test('domlora models: one line per snapshot from $HF_HUB_CACHE, and --json', () => {
  const text = cli(['models']);
  assert.equal(text.status, 0, text.stderr);
  const lines = text.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, new RegExp(`^Hugging Face cache ${cache.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(from HF_HUB_CACHE\\): 7 model repositories, 8 snapshots, [\\d.]+ [KM]B on disk$`));
  assert.match(lines[1]!, /^MODEL +REVISION +ARCH +PARAMS +ON DISK +DTYPE +STATUS$/);
  const row = (repo: string) => lines.filter((l) => l.startsWith(`${repo} `));
  assert.equal(row('domlora-test/stories260K').length, 2);
  assert.match(row('domlora-test/stories260K')[0]!, /^domlora-test\/stories260K +2222222 main +llama +260K +[\d.]+ MB +F32 +supported$/);
  assert.match(row('domlora-test/stories260K')[1]!, /^domlora-test\/stories260K +1111111 +llama /);
  assert.match(row('mistralai/Mistral-Nemo-Base-2407')[0]!, / mistral +12\.2B +[\d.]+ [KM]B\* +BF16 +supported$/);
  assert.match(row('TheBloke/stories260K-GGUF')[0]!, /not supported: GGUF only/);
  assert.match(lines.at(-1)!, /^\* ON DISK counts the blocks allocated/);

  const json = cli(['models', '--json', STORIES]);
  assert.equal(json.status, 0, json.stderr);
  const out = json.stdout.trim().split('\n');
  assert.equal(out.length, 1, 'one JSON line');
  const r = JSON.parse(out[0]!) as ModelsResult;
  assert.equal(r.cache?.dir, cache);
  assert.equal(r.models.length, 9);
  assert.deepEqual(r.models.at(-1)!.path, STORIES);

  const missing = cli(['models', '--no-cache', 'no/such/folder']);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /^domlora: .*no\/such\/folder: model folder does not exist$/m);
  const none = cli(['models'], { HF_HUB_CACHE: path.join(tmp, 'nowhere') });
  assert.equal(none.status, 0);
  assert.match(none.stdout, /^No Hugging Face cache at .*nowhere \(from HF_HUB_CACHE\)/);
});

test('a snapshot of symbolic links loads, sharded too: info, and eval reproduces the golden loss', () => {
  for (const snap of [oldSnap, newSnap]) {
    const info = cli(['info', snap, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).model.path, snap);
  }
  const data = path.join(tmp, 'golden.jsonl');
  fs.writeFileSync(data, JSON.stringify({ text: GOLDEN.tinystories_greedy_text.text }) + '\n');
  const r = cli(['eval', newSnap, '--data', data, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.ok(Math.abs(out.meanLoss - GOLDEN.tinystories_greedy_text.mean_next_token_ce_nats) < 1e-4,
    `eval on the sharded snapshot ${out.meanLoss} vs golden ${GOLDEN.tinystories_greedy_text.mean_next_token_ce_nats}`);
  // Reading the cache wrote nothing into it.
  assert.deepEqual(fs.readdirSync(newSnap).sort(), [...fs.readdirSync(STORIES).filter((n) => n !== 'model.safetensors'),
    'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json'].sort());
});
