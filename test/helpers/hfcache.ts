// A fake Hugging Face hub cache, laid out as huggingface_hub writes it: `models--ORG--NAME/blobs/<hash>` holds the
// files, `snapshots/<commit>/<name>` are relative symbolic links into `../../blobs/`, `refs/<ref>` holds a commit, and
// an unfinished download is a `<hash>.incomplete` blob with no link yet. Used by the unit tests and the e2e driver.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readHeader, readTensorF32, encodeSafetensors } from '../../src/engine/hf/safetensors';
import { synthLayout, synthTokenizer } from '../../src/engine/hf/synth';
import type { SynthShape } from '../../src/engine/arch/types';

export interface CacheFile {
  /** The path inside the snapshot: `config.json`, `onnx/model.onnx`. */
  name: string;
  /** The content, or a file to copy it from. */
  bytes?: Buffer | string;
  from?: string;
  /** The file's length: `bytes` first, then a hole up to this size (ftruncate), big on paper and cheap on disk. */
  sparseSize?: number;
  /** An unfinished download: the blob is `<hash>.incomplete` and the snapshot has no link to it. */
  incomplete?: boolean;
}

export function repoFolder(cache: string, repoId: string): string {
  return path.join(cache, `models--${repoId.split('/').join('--')}`);
}

/** Adds one snapshot of `repoId` at `revision` (blobs shared with other snapshots by content); returns its folder. */
export function addSnapshot(cache: string, repoId: string, revision: string, files: CacheFile[], refs: string[] = []): string {
  const repo = repoFolder(cache, repoId);
  const snapshot = path.join(repo, 'snapshots', revision);
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  for (const f of files) {
    const content = f.from ? fs.readFileSync(f.from) : Buffer.from(f.bytes ?? '');
    const id = crypto.createHash('sha256').update(content).update(String(f.sparseSize ?? '')).digest('hex');
    const blob = path.join(repo, 'blobs', id);
    const written = f.incomplete ? `${blob}.incomplete` : blob;
    if (!fs.existsSync(written)) {
      fs.writeFileSync(written, content);
      if (f.sparseSize !== undefined) fs.truncateSync(written, f.sparseSize);
    }
    if (f.incomplete) continue;
    const link = path.join(snapshot, f.name);
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(path.relative(path.dirname(link), blob), link);
  }
  for (const ref of refs) {
    fs.mkdirSync(path.dirname(path.join(repo, 'refs', ref)), { recursive: true });
    fs.writeFileSync(path.join(repo, 'refs', ref), revision);
  }
  return snapshot;
}

/** The files of a model folder on disk, to put into a snapshot as they are. */
export function folderFiles(dir: string, skip: string[] = []): CacheFile[] {
  return fs.readdirSync(dir).filter((n) => !skip.includes(n) && fs.statSync(path.join(dir, n)).isFile())
    .map((name) => ({ name, from: path.join(dir, name) }));
}

/** The weights of a one-file model folder split into `n` shards with their index, as transformers saves them. */
export function shardedWeights(dir: string, n: number): CacheFile[] {
  const h = readHeader(path.join(dir, 'model.safetensors'));
  const names = [...h.tensors.keys()];
  const per = Math.ceil(names.length / n);
  const files: CacheFile[] = [];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const shard = `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
    const part = names.slice(i * per, (i + 1) * per);
    for (const name of part) weightMap[name] = shard;
    files.push({ name: shard, bytes: encodeSafetensors(part.map((name) => ({ name, shape: h.tensors.get(name)!.shape, data: readTensorF32(h, name) })), { format: 'pt' }) });
  }
  files.push({ name: 'model.safetensors.index.json', bytes: JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2) });
  return files;
}

const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2 } as const;

/** A safetensors header (length prefix and JSON) for these tensors, and the length of the whole file. */
export function safetensorsHeader(tensors: { name: string; shape: number[] }[], dtype: keyof typeof DTYPE_BYTES): { header: Buffer; size: number } {
  const json: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    json[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let text = JSON.stringify(json);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  const header = Buffer.concat([len, Buffer.from(text, 'utf8')]);
  return { header, size: header.length + offset };
}

/**
 * The files of a synthetic model of this shape whose weight shards are sparse: real headers, data sections that are
 * holes. A 70B-parameter layout costs a few hundred KB on disk; reading its tensors would read zeros.
 */
export function sparseModelFiles(shape: SynthShape, shards: number, opts: { tokenizer?: boolean; config?: Record<string, unknown> } = {}): CacheFile[] {
  const { config, tensors } = synthLayout(shape);
  const dtype = shape.dtype ?? 'BF16';
  const per = Math.ceil(tensors.length / shards);
  const files: CacheFile[] = [{ name: 'config.json', bytes: JSON.stringify({ ...config, torch_dtype: 'bfloat16', ...opts.config }, null, 2) }];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < shards; i++) {
    const part = tensors.slice(i * per, (i + 1) * per);
    const shard = shards === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    for (const t of part) weightMap[t.name] = shard;
    const { header, size } = safetensorsHeader(part, dtype);
    files.push({ name: shard, bytes: header, sparseSize: size });
  }
  if (shards > 1) files.push({ name: 'model.safetensors.index.json', bytes: JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2) });
  if (opts.tokenizer ?? true) {
    const tok = synthTokenizer(384);
    files.push({ name: 'tokenizer.json', bytes: JSON.stringify(tok.tokenizer) }, { name: 'tokenizer_config.json', bytes: JSON.stringify(tok.config) });
  }
  return files;
}

/** Sets a folder's modification time (snapshots are ordered by it when refs/main names none of them). */
export function touch(dir: string, secondsAgo: number): void {
  const t = new Date(Date.now() - secondsAgo * 1000);
  fs.utimesSync(dir, t, t);
}
