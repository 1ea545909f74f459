import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  encodeSafetensors, writeSafetensors, readHeader, readTensorF32, WeightStore, floatToHalf, TensorToWrite,
} from '../../src/engine/hf/safetensors';
import { DomLoraError } from '../../src/engine/runtime/errors';

const tempRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'domlora-safetensors-'));
after(() => fs.rmSync(tempRoot, { recursive: true, force: true }));
let tempCount = 0;

function tempPath(name: string): string {
  return path.join(tempRoot, `${tempCount++}-${name}`);
}

function tempDir(name: string): string {
  const dir = tempPath(name);
  fs.mkdirSync(dir);
  return dir;
}

/** A file made of an 8-byte length, the given header text and `data` bytes; `len` overrides the length field. */
function rawFile(headerText: string, data: Buffer = Buffer.alloc(0), len?: bigint): string {
  const file = tempPath('raw.safetensors');
  const header = Buffer.from(headerText, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(len ?? BigInt(header.length));
  fs.writeFileSync(file, Buffer.concat([lenBuf, header, data]));
  return file;
}

function headerFile(header: unknown, dataBytes: number): string {
  return rawFile(JSON.stringify(header), Buffer.alloc(dataBytes));
}

/** Asserts `fn` throws a bad-input DomLoraError whose message names `file` and matches `problem`. */
function assertBadInput(fn: () => unknown, file: string, problem: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DomLoraError, `expected a DomLoraError, got ${String(err)}`);
    assert.equal(err.code, 'bad-input');
    assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
    assert.match(err.message, problem);
    return true;
  });
}

const asArray = (a: Float32Array) => Array.from(a);

// Values exactly representable in each dtype (so the round trip is exact), including sign, zero and extremes.
const F32_VALUES = [0, -0, 1, -2.5, Math.fround(Math.PI), Math.fround(1e-30), Math.fround(-3e38), Math.fround(1.4e-45), Infinity, -Infinity];
const F16_VALUES = [0, -0, 1, -2.5, 0.333251953125, 65504, -65504, 2 ** -24, 2 ** -14, 1023.5, Infinity, -Infinity];
const BF16_VALUES = [0, -0, 1, -2.5, 3.140625, 2 ** 100, -(2 ** -100), 0.0078125, 65280, -1.9921875, Infinity, -Infinity];

test('encode/readHeader/readTensorF32 round trip for F32, F16 and BF16, with metadata', () => {
  const tensors: TensorToWrite[] = [
    { name: 'a.f32', shape: [2, 5], data: Float32Array.from(F32_VALUES), dtype: 'F32' },
    { name: 'b.f16', shape: [3, 4], data: Float32Array.from(F16_VALUES), dtype: 'F16' },
    { name: 'c.bf16', shape: [12], data: Float32Array.from(BF16_VALUES), dtype: 'BF16' },
    { name: 'd.default', shape: [1, 2], data: Float32Array.from([7, -8]) },
    { name: 'e.scalar', shape: [], data: Float32Array.from([42]) },
  ];
  const metadata = { format: 'pt', note: 'hello \u00e9' };
  const file = tempPath('rt.safetensors');
  writeSafetensors(file, tensors, metadata);
  assert.deepEqual(fs.readFileSync(file), encodeSafetensors(tensors, metadata), 'writeSafetensors writes the encoded bytes');

  const h = readHeader(file);
  assert.equal(h.file, file);
  assert.deepEqual(h.metadata, metadata);
  assert.deepEqual([...h.tensors.keys()], tensors.map((t) => t.name));
  const e = (n: string) => h.tensors.get(n)!;
  assert.deepEqual({ dtype: e('a.f32').dtype, shape: e('a.f32').shape, begin: e('a.f32').begin, end: e('a.f32').end },
    { dtype: 'F32', shape: [2, 5], begin: 0, end: 40 });
  assert.deepEqual([e('b.f16').dtype, e('b.f16').begin, e('b.f16').end], ['F16', 40, 64]);
  assert.deepEqual([e('c.bf16').dtype, e('c.bf16').begin, e('c.bf16').end], ['BF16', 64, 88]);
  assert.deepEqual([e('d.default').dtype, e('d.default').end - e('d.default').begin], ['F32', 8]);
  assert.deepEqual(e('e.scalar').shape, []);
  assert.equal(h.dataStart + 88 + 8 + 4, fs.statSync(file).size, 'data section follows the header exactly');

  // deepEqual on plain arrays uses Object.is: -0 and 0 are told apart.
  assert.deepEqual(asArray(readTensorF32(h, 'a.f32')), F32_VALUES.map(Math.fround));
  assert.deepEqual(asArray(readTensorF32(h, 'b.f16')), F16_VALUES);
  assert.deepEqual(asArray(readTensorF32(h, 'c.bf16')), BF16_VALUES);
  assert.deepEqual(asArray(readTensorF32(h, 'd.default')), [7, -8]);
  assert.deepEqual(asArray(readTensorF32(h, 'e.scalar')), [42]);
  assertBadInput(() => readTensorF32(h, 'nope'), file, /tensor "nope" not found/);
});

test('F16 and BF16 bytes are the IEEE encodings', () => {
  const bytes = encodeSafetensors([
    { name: 'h', shape: [3], data: Float32Array.from([1, -2, 65504]), dtype: 'F16' },
    { name: 'b', shape: [2], data: Float32Array.from([1, -2]), dtype: 'BF16' },
  ]);
  const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
  const u16 = (i: number) => bytes.readUInt16LE(dataStart + 2 * i);
  assert.deepEqual([u16(0), u16(1), u16(2), u16(3), u16(4)], [0x3c00, 0xc000, 0x7bff, 0x3f80, 0xc000]);
  assert.equal(floatToHalf(0.5), 0x3800);
  assert.equal(floatToHalf(2 ** -24), 0x0001);
});

test('the header is padded with spaces to a multiple of 8 bytes for every name length', () => {
  const residues = new Set<number>();
  for (let n = 1; n <= 8; n++) {
    const name = 'x'.repeat(n);
    const bytes = encodeSafetensors([{ name, shape: [1], data: Float32Array.from([n]) }]);
    const len = Number(bytes.readBigUInt64LE(0));
    assert.equal(len % 8, 0, `header length ${len} for name length ${n}`);
    const text = bytes.subarray(8, 8 + len).toString('utf8');
    const json = JSON.stringify({ [name]: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
    assert.ok(text.startsWith(json), text);
    assert.match(text.slice(json.length), /^ {0,7}$/);
    residues.add(json.length % 8);
    assert.equal(bytes.length, 8 + len + 4);
    const file = tempPath('pad.safetensors');
    fs.writeFileSync(file, bytes);
    const h = readHeader(file);
    assert.equal(h.dataStart, 8 + len);
    assert.equal(h.dataStart % 8, 0);
    assert.deepEqual(asArray(readTensorF32(h, name)), [n]);
  }
  assert.equal(residues.size, 8, 'every unpadded length residue was exercised');
});

test('F64 tensors are read; integer tensors are refused when read as weights', () => {
  const f64 = Buffer.alloc(16);
  f64.writeDoubleLE(1.5, 0);
  f64.writeDoubleLE(-0.25, 8);
  const i32 = Buffer.alloc(8);
  const file = rawFile(JSON.stringify({
    d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] },
    i: { dtype: 'I32', shape: [2], data_offsets: [16, 24] },
  }), Buffer.concat([f64, i32]));
  const h = readHeader(file);
  assert.deepEqual(asArray(readTensorF32(h, 'd')), [1.5, -0.25]);
  assertBadInput(() => readTensorF32(h, 'i'), file, /I32.*floating-point/);
});

test('encodeSafetensors refuses data that does not fill its shape', () => {
  assert.throws(() => encodeSafetensors([{ name: 'w', shape: [2, 3], data: new Float32Array(5) }]), /shape \[2,3\] holds 6 values, data has 5/);
});

test('WeightStore opens a single model.safetensors', () => {
  const dir = tempDir('single');
  writeSafetensors(path.join(dir, 'model.safetensors'), [
    { name: 'w', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    { name: 'v', shape: [2], data: Float32Array.from([0.5, -1]), dtype: 'BF16' },
    { name: 'u', shape: [1], data: Float32Array.from([3]) },
  ]);
  const store = WeightStore.open(dir);
  assert.equal(store.dir, dir);
  assert.deepEqual(store.names.sort(), ['u', 'v', 'w']);
  assert.ok(store.has('w'));
  assert.ok(!store.has('missing'));
  assert.deepEqual(store.entry('w').shape, [2, 3]);
  assert.equal(store.entry('v').dtype, 'BF16');
  assert.equal(store.dtype, 'F32');
  assert.deepEqual(asArray(store.read('w', [2, 3])), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(asArray(store.read('w')), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(asArray(store.read('v', [2])), [0.5, -1]);
  assertBadInput(() => store.read('missing'), dir, /no tensor "missing"/);
  assertBadInput(() => store.entry('missing'), dir, /no tensor "missing"/);
});

test('WeightStore opens a sharded folder through model.safetensors.index.json', () => {
  const dir = tempDir('sharded');
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [
    { name: 'a', shape: [2], data: Float32Array.from([1, 2]), dtype: 'F16' },
    { name: 'b', shape: [1, 2], data: Float32Array.from([3, 4]), dtype: 'F16' },
  ]);
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
    { name: 'c', shape: [3], data: Float32Array.from([5, 6, 7]), dtype: 'F16' },
  ]);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({
    metadata: { total_size: 14 },
    weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' },
  }));
  const store = WeightStore.open(dir);
  assert.deepEqual(store.names.sort(), ['a', 'b', 'c']);
  assert.equal(store.dtype, 'F16');
  assert.deepEqual(asArray(store.read('a', [2])), [1, 2]);
  assert.deepEqual(asArray(store.read('b', [1, 2])), [3, 4]);
  assert.deepEqual(asArray(store.read('c', [3])), [5, 6, 7]);
  const shard2 = path.join(dir, 'model-00002-of-00002.safetensors');
  assertBadInput(() => store.read('c', [1, 3]), shard2, /"c" has shape \[3\].*\[1, 3\]/);
});

test('WeightStore prefers model.safetensors over an index', () => {
  const dir = tempDir('both');
  writeSafetensors(path.join(dir, 'model.safetensors'), [{ name: 'only', shape: [1], data: Float32Array.from([9]) }]);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { other: 'gone.safetensors' } }));
  assert.deepEqual(WeightStore.open(dir).names, ['only']);
});

test('WeightStore.read checks the expected shape', () => {
  const dir = tempDir('shape');
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, [{ name: 'model.layers.0.mlp.up_proj.weight', shape: [4, 2], data: new Float32Array(8) }]);
  const store = WeightStore.open(dir);
  assertBadInput(() => store.read('model.layers.0.mlp.up_proj.weight', [2, 4]), file,
    /tensor "model\.layers\.0\.mlp\.up_proj\.weight" has shape \[4, 2\], but config\.json implies \[2, 4\]/);
  assertBadInput(() => store.read('model.layers.0.mlp.up_proj.weight', [8]), file, /has shape \[4, 2\].*implies \[8\]/);
  assertBadInput(() => store.read('model.layers.0.mlp.up_proj.weight', [4, 2, 1]), file, /implies \[4, 2, 1\]/);
  assert.equal(store.read('model.layers.0.mlp.up_proj.weight', [4, 2]).length, 8);
});

test('WeightStore: the index names a missing shard', () => {
  const dir = tempDir('missing-shard');
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [{ name: 'a', shape: [1], data: new Float32Array(1) }]);
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }));
  assertBadInput(() => WeightStore.open(dir), index, /shard "model-00002-of-00002\.safetensors", which does not exist/);
});

test('WeightStore: the index places a tensor in a shard that lacks it', () => {
  const dir = tempDir('absent-tensor');
  writeSafetensors(path.join(dir, 's1.safetensors'), [{ name: 'a', shape: [1], data: new Float32Array(1) }]);
  writeSafetensors(path.join(dir, 's2.safetensors'), [{ name: 'b', shape: [1], data: new Float32Array(1) }]);
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's1.safetensors' } }));
  assertBadInput(() => WeightStore.open(dir), index, /"b" is in "s1\.safetensors", but that shard has no such tensor/);
});

test('WeightStore: an index that is not JSON or has no weight_map', () => {
  const dir = tempDir('bad-index');
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, '{"weight_map": ');
  assertBadInput(() => WeightStore.open(dir), index, /invalid JSON/);
  fs.writeFileSync(index, '{"metadata": {}}');
  assertBadInput(() => WeightStore.open(dir), index, /no "weight_map" object/);
});

test('WeightStore: a folder with neither weights file', () => {
  const dir = tempDir('empty');
  assert.throws(() => WeightStore.open(dir), (err: unknown) => {
    assert.ok(err instanceof DomLoraError);
    assert.equal(err.code, 'bad-input');
    assert.ok(err.message.includes(dir), err.message);
    assert.match(err.message, /no model\.safetensors or model\.safetensors\.index\.json/);
    assert.doesNotMatch(err.message, /pytorch_model\.bin/);
    return true;
  });
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'not really');
  assertBadInput(() => WeightStore.open(dir), dir, /no model\.safetensors.*pytorch_model\.bin is not supported/);
});

test('readHeader: a missing file', () => {
  const file = path.join(tempRoot, 'does-not-exist.safetensors');
  assertBadInput(() => readHeader(file), file, /cannot open weights file \(ENOENT\)/);
});

test('readHeader: a file shorter than 8 bytes', () => {
  for (const size of [0, 7]) {
    const file = tempPath('short.safetensors');
    fs.writeFileSync(file, Buffer.alloc(size));
    assertBadInput(() => readHeader(file), file, new RegExp(`${size} bytes, shorter than the 8-byte header length`));
  }
});

test('readHeader: a header length past the end of the file', () => {
  const file = rawFile('{}', Buffer.alloc(0), 1000n);
  assertBadInput(() => readHeader(file), file, /header length 1000 runs past the end of the 10-byte file/);
  const exact = rawFile('{}', Buffer.alloc(0), 3n);
  assertBadInput(() => readHeader(exact), exact, /header length 3 runs past the end/);
});

test('readHeader: an absurdly large header length is refused before allocating', () => {
  const file = rawFile('{}', Buffer.alloc(0), 1n << 40n);
  assertBadInput(() => readHeader(file), file, /header length 1099511627776 exceeds the 104857600-byte limit/);
  const huge = rawFile('{}', Buffer.alloc(0), 0xffffffffffffffffn);
  assertBadInput(() => readHeader(huge), huge, /exceeds the .*limit/);
});

test('readHeader: a header that is not valid JSON', () => {
  const file = rawFile('{"w": {"dtype": "F32",');
  assertBadInput(() => readHeader(file), file, /header is not valid JSON/);
});

test('readHeader: a header that is not a JSON object', () => {
  for (const text of ['[1, 2]', '"text"', 'null', '42']) {
    const file = rawFile(text);
    assertBadInput(() => readHeader(file), file, /header is not a JSON object/);
  }
});

test('readHeader: an entry that is not an object', () => {
  const file = headerFile({ w: 5 }, 0);
  assertBadInput(() => readHeader(file), file, /tensor "w": entry is not an object/);
});

test('readHeader: an unknown dtype', () => {
  const file = headerFile({ w: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } }, 4);
  assertBadInput(() => readHeader(file), file, /tensor "w": unsupported dtype "F8_E4M3"/);
  const missing = headerFile({ w: { shape: [1], data_offsets: [0, 4] } }, 4);
  assertBadInput(() => readHeader(missing), missing, /tensor "w": unsupported dtype/);
  const lower = headerFile({ w: { dtype: 'f32', shape: [1], data_offsets: [0, 4] } }, 4);
  assertBadInput(() => readHeader(lower), lower, /unsupported dtype "f32"/);
  // Names that exist on every object's prototype are not dtypes.
  for (const dtype of ['toString', 'constructor', '__proto__']) {
    const inherited = headerFile({ w: { dtype, shape: [1], data_offsets: [0, 4] } }, 4);
    assertBadInput(() => readHeader(inherited), inherited, new RegExp(`unsupported dtype "${dtype}"`));
  }
});

test('readHeader: a bad shape', () => {
  for (const shape of [[-1, 2], [1.5], '4', null, [2, '2']]) {
    const file = headerFile({ w: { dtype: 'F32', shape, data_offsets: [0, 16] } }, 16);
    assertBadInput(() => readHeader(file), file, /tensor "w": shape .* is not a list of non-negative integers/);
  }
});

test('readHeader: data_offsets that are not [begin, end] with begin <= end', () => {
  for (const off of [[0], [0, 4, 8], '0,4', [-4, 0], [0.5, 4.5], [8, 4], null]) {
    const file = headerFile({ w: { dtype: 'F32', shape: [1], data_offsets: off } }, 16);
    assertBadInput(() => readHeader(file), file, /tensor "w": data_offsets .* are not \[begin, end\] with begin <= end/);
  }
});

test('readHeader: data_offsets past the end of the data section', () => {
  const file = headerFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 12);
  assertBadInput(() => readHeader(file), file, /tensor "w": data_offsets \[0, 16\] run past the end of the data section \(12 bytes\)/);
});

test('readHeader: a byte count that does not match the shape', () => {
  const file = headerFile({ w: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 8] } }, 16);
  assertBadInput(() => readHeader(file), file, /tensor "w": shape \[2, 3\] of F16 needs 12 bytes but data_offsets hold 8/);
});

test('readHeader: two tensors overlapping', () => {
  const file = headerFile({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, 12);
  assertBadInput(() => readHeader(file), file, /tensors "a" and "b" overlap/);
  // Listed out of order, the overlap is still found; touching ranges are fine.
  const reversed = headerFile({
    late: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
    early: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
  }, 16);
  assertBadInput(() => readHeader(reversed), reversed, /tensors "early" and "late" overlap/);
  const touching = headerFile({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
  }, 16);
  assert.equal(readHeader(touching).tensors.size, 2);
});

test('a corrupt shard makes WeightStore.open fail naming the shard', () => {
  const dir = tempDir('corrupt-shard');
  writeSafetensors(path.join(dir, 's1.safetensors'), [{ name: 'a', shape: [1], data: new Float32Array(1) }]);
  const shard = path.join(dir, 's2.safetensors');
  fs.writeFileSync(shard, Buffer.alloc(3));
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's2.safetensors' } }));
  assertBadInput(() => WeightStore.open(dir), shard, /shorter than the 8-byte header length/);
});

test('the stories260K weights read through WeightStore', () => {
  const dir = path.resolve('test/fixtures/models/stories260K');
  const store = WeightStore.open(dir);
  assert.equal(store.dtype, 'F32');
  assert.deepEqual(store.entry('model.embed_tokens.weight').shape, [512, 64]);
  const norm = store.read('model.norm.weight', [64]);
  assert.equal(norm.length, 64);
  assert.ok(norm.every(Number.isFinite));
});

test('streaming writer: the same bytes as encodeSafetensors, one tensor in memory at a time', async () => {
  const { writeSafetensorsStreaming } = await import('../../src/engine/hf/safetensors');
  const tensors = [
    { name: 'a', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    { name: 'b.weight', shape: [5], data: Float32Array.from([0.5, -1, 2e-8, 3e8, -0]) },
  ];
  const dir = fs.mkdtempSync(path.join(tempRoot, 'st-stream-'));
  const file = path.join(dir, 's.safetensors');
  const asked: string[] = [];
  await writeSafetensorsStreaming(file, tensors.map(({ name, shape }) => ({ name, shape })), async (name) => { asked.push(name); return tensors.find((t) => t.name === name)!.data; }, { format: 'pt' });
  assert.deepEqual(asked, ['a', 'b.weight']);
  assert.deepEqual(fs.readFileSync(file), encodeSafetensors(tensors, { format: 'pt' }));
  await assert.rejects(writeSafetensorsStreaming(file, [{ name: 'x', shape: [3] }], async () => new Float32Array(2)), /expected 3 values, got 2/);
  fs.rmSync(dir, { recursive: true, force: true });
});
