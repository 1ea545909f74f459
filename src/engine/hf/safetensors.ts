// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
// 8 bytes little-endian header length N, N bytes of JSON header, then the raw tensor bytes.
// Tensors are read one at a time at their offsets, so a multi-GB file never has to sit in one buffer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { badInput } from '../runtime/errors';
import { writeFileAtomic } from '../runtime/atomic';

export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
const DTYPE_BYTES: Record<Dtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
/** Headers larger than this are refused: real ones are well under 10 MB, and a corrupt length must not allocate GBs. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorEntry { name: string; dtype: Dtype; shape: number[]; begin: number; end: number }

export interface SafetensorsHeader {
  file: string;
  /** Absolute byte position where tensor data starts (8 + header length). */
  dataStart: number;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** Reads and validates the header of one safetensors file. */
export function readHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw badInput(`cannot open weights file (${(e as NodeJS.ErrnoException).code ?? String(e)})`, file);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw badInput(`not a safetensors file: ${size} bytes, shorter than the 8-byte header length`, file);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > MAX_HEADER_BYTES) throw badInput(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt file?)`, file);
    if (8 + headerLen > size) throw badInput(`header length ${headerLen} runs past the end of the ${size}-byte file`, file);
    const headerBuf = Buffer.alloc(headerLen);
    fs.readSync(fd, headerBuf, 0, headerLen, 8);
    let json: unknown;
    try {
      json = JSON.parse(headerBuf.toString('utf8'));
    } catch (e) {
      throw badInput(`header is not valid JSON (${(e as Error).message})`, file);
    }
    if (!json || typeof json !== 'object' || Array.isArray(json)) throw badInput('header is not a JSON object', file);
    const dataLen = size - 8 - headerLen;
    const tensors = new Map<string, TensorEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (value && typeof value === 'object') metadata = value as Record<string, string>;
        continue;
      }
      tensors.set(name, validateEntry(file, name, value, dataLen));
    }
    // Tensors must not overlap: sort by start and compare neighbours.
    const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].begin < sorted[i - 1].end) {
        throw badInput(`tensors "${sorted[i - 1].name}" and "${sorted[i].name}" overlap in the data section`, file);
      }
    }
    return { file, dataStart: 8 + headerLen, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

function validateEntry(file: string, name: string, value: unknown, dataLen: number): TensorEntry {
  const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (!v || typeof v !== 'object') throw badInput(`tensor "${name}": entry is not an object`, file);
  if (typeof v.dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, v.dtype)) {
    throw badInput(`tensor "${name}": unsupported dtype ${JSON.stringify(v.dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`, file);
  }
  const dtype = v.dtype as Dtype;
  if (!Array.isArray(v.shape) || !v.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw badInput(`tensor "${name}": shape ${JSON.stringify(v.shape)} is not a list of non-negative integers`, file);
  }
  const shape = v.shape as number[];
  const off = v.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[0] > off[1]) {
    throw badInput(`tensor "${name}": data_offsets ${JSON.stringify(off)} are not [begin, end] with begin <= end`, file);
  }
  const [begin, end] = off as [number, number];
  if (end > dataLen) throw badInput(`tensor "${name}": data_offsets [${begin}, ${end}] run past the end of the data section (${dataLen} bytes)`, file);
  const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
  if (end - begin !== expected) {
    throw badInput(`tensor "${name}": shape [${shape.join(', ')}] of ${dtype} needs ${expected} bytes but data_offsets hold ${end - begin}`, file);
  }
  return { name, dtype, shape, begin, end };
}

/** Reads one tensor and converts it to float32 (F32, F16, BF16 and F64 are supported). */
export function readTensorF32(header: SafetensorsHeader, name: string): Float32Array {
  const entry = header.tensors.get(name);
  if (!entry) throw badInput(`tensor "${name}" not found`, header.file);
  return readElementsF32(header, entry, 0, entry.shape.reduce((a, b) => a * b, 1));
}

/**
 * Elements [first, first + count) of a tensor (row-major) as float32, read straight from the file: a pass that needs a
 * layer, or a few rows of an embedding, reads just those bytes, and the OS page cache does the caching.
 */
export function readElementsF32(header: SafetensorsHeader, entry: TensorEntry, first: number, count: number): Float32Array {
  const size = DTYPE_BYTES[entry.dtype];
  const bytes = Buffer.alloc(count * size);
  const fd = fs.openSync(header.file, 'r');
  try {
    let done = 0;
    const at = header.dataStart + entry.begin + first * size;
    while (done < bytes.length) {
      const n = fs.readSync(fd, bytes, done, bytes.length - done, at + done);
      if (n <= 0) throw badInput(`unexpected end of file while reading "${entry.name}"`, header.file);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return toF32(bytes, entry.dtype, header.file, entry.name);
}

function toF32(bytes: Buffer, dtype: Dtype, file: string, name: string): Float32Array {
  const n = bytes.length / DTYPE_BYTES[dtype];
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case 'F64': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = bytes.readDoubleLE(i * 8);
      return out;
    }
    case 'BF16': {
      // bfloat16 is the top half of a float32: shift it back into place.
      const out = new Float32Array(n);
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u32[i] = bytes.readUInt16LE(i * 2) << 16;
      return out;
    }
    case 'F16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(bytes.readUInt16LE(i * 2));
      return out;
    }
    default:
      throw badInput(`tensor "${name}" has dtype ${dtype}; only floating-point weights (F32, F16, BF16, F64) can be loaded`, file);
  }
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function floatToHalf(f: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, f);
  const x = buf.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (((x >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant = (mant | 0x800000) >> (1 - exp);
    return sign | ((mant + 0x1000) >> 13);
  }
  const h = sign | (exp << 10) | (mant >> 13);
  return (mant & 0x1000) ? h + 1 : h; // round half up (good enough for test fixtures)
}

export interface TensorToWrite { name: string; shape: number[]; data: Float32Array; dtype?: 'F32' | 'F16' | 'BF16' }

/** Serialises tensors into safetensors bytes. Tensors are laid out in the given order. */
export function encodeSafetensors(tensors: TensorToWrite[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const blobs: Buffer[] = [];
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`tensor ${t.name}: shape [${t.shape}] holds ${n} values, data has ${t.data.length}`);
    const dtype = t.dtype ?? 'F32';
    const bytes = tensorBytes(t.data, dtype);
    const blob = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + blob.length] };
    offset += blob.length;
    blobs.push(blob);
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces to a multiple of 8 bytes, as the reference writer does, so data is aligned.
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json, 'utf8'), ...blobs]);
}

/** One tensor's bytes in its dtype (F16/BF16 converted from the f32 values). */
function tensorBytes(data: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint16Array(data.length);
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(data.buffer, data.byteOffset, data.length);
    for (let i = 0; i < data.length; i++) out[i] = u32[i] >>> 16;
  } else {
    for (let i = 0; i < data.length; i++) out[i] = floatToHalf(data[i]);
  }
  return new Uint8Array(out.buffer);
}

/**
 * Writes tensors one at a time: the header (offsets follow from the shapes and dtypes) first, then each tensor as
 * `produce` hands it over, so a file of many GB never sits in memory. Not atomic: write into a temporary folder.
 */
export async function writeSafetensorsStreaming(file: string, entries: { name: string; shape: number[]; dtype?: 'F32' | 'F16' | 'BF16' }[],
  produce: (name: string, index: number) => Promise<Float32Array>, metadata?: Record<string, string>): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of entries) {
    const bytes = (e.dtype && e.dtype !== 'F32' ? 2 : 4) * e.shape.reduce((a, b) => a * b, 1);
    header[e.name] = { dtype: e.dtype ?? 'F32', shape: e.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, Buffer.from(json, 'utf8'));
    for (let i = 0; i < entries.length; i++) {
      const data = await produce(entries[i].name, i);
      const n = entries[i].shape.reduce((a, b) => a * b, 1);
      if (data.length !== n) throw new Error(`tensor ${entries[i].name}: expected ${n} values, got ${data.length}`);
      const bytes = tensorBytes(data, entries[i].dtype ?? 'F32');
      // writeSync takes at most 2 GiB at once.
      for (let at = 0; at < bytes.length; at += 1 << 30) fs.writeSync(fd, bytes.subarray(at, Math.min(bytes.length, at + (1 << 30))));
    }
  } finally {
    fs.closeSync(fd);
  }
}

export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

/** The weights of a model folder: one `model.safetensors`, or shards listed in `model.safetensors.index.json`. */
export class WeightStore {
  private constructor(readonly dir: string, private readonly headers: Map<string, SafetensorsHeader>) {}

  static open(dir: string): WeightStore {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    const headers = new Map<string, SafetensorsHeader>();
    if (fs.existsSync(single)) {
      const h = readHeader(single);
      for (const name of h.tensors.keys()) headers.set(name, h);
    } else if (fs.existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map;
      } catch (e) {
        throw badInput(`invalid JSON (${(e as Error).message})`, index);
      }
      if (!weightMap || typeof weightMap !== 'object' || Array.isArray(weightMap)) throw badInput('has no "weight_map" object', index);
      const shardHeaders = new Map<string, SafetensorsHeader>();
      for (const [name, shard] of Object.entries(weightMap)) {
        if (typeof shard !== 'string' || shard.includes('..') || path.isAbsolute(shard)) {
          throw badInput(`weight_map entry for "${name}" must be a file name inside the model folder, got ${JSON.stringify(shard)}`, index);
        }
        const shardPath = path.join(dir, shard);
        let h = shardHeaders.get(shardPath);
        if (!h) {
          if (!fs.existsSync(shardPath)) throw badInput(`weight_map names shard "${shard}", which does not exist`, index);
          h = readHeader(shardPath);
          shardHeaders.set(shardPath, h);
        }
        if (!h.tensors.has(name)) throw badInput(`weight_map says "${name}" is in "${shard}", but that shard has no such tensor`, index);
        headers.set(name, h);
      }
    } else {
      const hasBin = fs.existsSync(path.join(dir, 'pytorch_model.bin'));
      throw badInput(`no model.safetensors or model.safetensors.index.json${hasBin ? ' (pytorch_model.bin is not supported: convert it to safetensors)' : ''}`, dir);
    }
    return new WeightStore(dir, headers);
  }

  get names(): string[] { return [...this.headers.keys()]; }
  has(name: string): boolean { return this.headers.has(name); }

  entry(name: string): TensorEntry {
    const h = this.headers.get(name);
    if (!h) throw badInput(`the weights have no tensor "${name}"`, this.dir);
    return h.tensors.get(name)!;
  }

  /** Reads one tensor as float32, checking its shape when `shape` is given. */
  read(name: string, shape?: number[]): Float32Array {
    const h = this.check(name, shape);
    return readTensorF32(h, name);
  }

  /** Rows [start, start + count) of a 2-D tensor as float32 [count, cols]. */
  readRows(name: string, start: number, count: number): Float32Array {
    const h = this.check(name);
    const e = h.tensors.get(name)!;
    const cols = e.shape.slice(1).reduce((a, b) => a * b, 1);
    if (start < 0 || start + count > e.shape[0]) throw badInput(`rows ${start}..${start + count} of "${name}" are outside its ${e.shape[0]} rows`, h.file);
    return readElementsF32(h, e, start * cols, count * cols);
  }

  /** The tensor's header, its shape checked against `shape` when given, without reading its data. */
  check(name: string, shape?: number[]): SafetensorsHeader {
    const h = this.headers.get(name);
    if (!h) throw badInput(`the weights have no tensor "${name}"`, this.dir);
    const e = h.tensors.get(name)!;
    if (shape && (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i]))) {
      throw badInput(`tensor "${name}" has shape [${e.shape.join(', ')}], but config.json implies [${shape.join(', ')}]`, h.file);
    }
    return h;
  }

  /** Bytes per element of the dtype most tensors are stored in (2 for BF16/F16). */
  get dtypeBytes(): number {
    return DTYPE_BYTES[this.dtype as Dtype] ?? 4;
  }

  /** The storage dtype most tensors use (for reporting). */
  get dtype(): string {
    const counts = new Map<string, number>();
    for (const [name, h] of this.headers) { const d = h.tensors.get(name)!.dtype; counts.set(d, (counts.get(d) ?? 0) + 1); }
    return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'F32';
  }
}
