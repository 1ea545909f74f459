// The [V, H] tables of a model's two ends: the token embeddings (read by rows) and the LM head (multiplied by, in
// parts along the vocabulary). Either resident on the backend, in as many parts as one binding allows (one part on
// CPU backends; a GPU binds 128 MiB to a few GiB), or streamed: kept in the weight files, in their stored dtype, and
// read when a pass needs them (the rows of the tokens for the embedding, one part at a time for the head). A
// 128k-vocabulary model's embedding and head are 2 GB each in f32: streamed, they never sit in the wasm heap at all.
import * as tf from '@tensorflow/tfjs-core';
import type { WeightStore } from '../hf/safetensors';

/** A slice of the table on the backend: vocabulary rows start .. start + Vp. */
export interface VocabPart {
  start: number;
  rows: tf.Tensor2D; // [Vp, H]
  /** The transpose [H, Vp], what logits multiply by (head parts only). */
  cols?: tf.Tensor2D;
}

export interface Vocab {
  /** The parts, in vocabulary order. */
  readonly ranges: readonly { start: number; count: number }[];
  /** Whether the parts stay on the backend (else each use uploads one). */
  readonly resident: boolean;
  /** Part i on the backend, with its transpose when `cols`; give it back with release(). */
  part(i: number, cols: boolean): VocabPart;
  release(p: VocabPart): void;
  /** The rows of `ids` [T, H]. */
  gather(ids: number[]): tf.Tensor2D;
  /** The tensors it holds on the backend. */
  tensors(): tf.Tensor[];
}

/** The vocabulary split into parts of at most `partRows` rows. */
export function vocabRanges(vocab: number, partRows: number): { start: number; count: number }[] {
  const out: { start: number; count: number }[] = [];
  for (let start = 0; start < vocab; start += partRows) out.push({ start, count: Math.min(partRows, vocab - start) });
  return out;
}

/** Every part uploaded at load, kept until the model is disposed. */
export class ResidentVocab implements Vocab {
  readonly resident = true;
  readonly ranges: { start: number; count: number }[];
  private readonly parts: VocabPart[];

  /** `data` [V, H] f32; `withCols` keeps the transposes (a head's). */
  constructor(data: Float32Array, V: number, private readonly H: number, partRows: number, withCols: boolean) {
    this.ranges = vocabRanges(V, partRows);
    this.parts = this.ranges.map(({ start, count }) => {
      const rows = tf.tensor2d(data.subarray(start * H, (start + count) * H), [count, H]);
      return { start, rows, ...(withCols ? { cols: tf.transpose(rows) as tf.Tensor2D } : {}) };
    });
  }

  /** A head that shares an embedding's parts (tied weights), adding the transposes. */
  static tiedHead(embed: ResidentVocab): ResidentVocab {
    const head = Object.create(ResidentVocab.prototype) as ResidentVocab;
    Object.assign(head, {
      resident: true, ranges: embed.ranges, H: embed.H,
      parts: embed.parts.map((p) => { p.cols ??= tf.transpose(p.rows) as tf.Tensor2D; return p; }),
    });
    return head;
  }

  part(i: number): VocabPart { return this.parts[i]; }
  release(): void { /* resident: kept */ }

  gather(ids: number[]): tf.Tensor2D {
    if (this.parts.length === 1) return tf.gather(this.parts[0].rows, tf.tensor1d(ids, 'int32')) as tf.Tensor2D;
    // One gather per part that holds any of the ids, scattered into place.
    const out: tf.Tensor2D[] = [];
    for (const p of this.parts) {
      const end = p.start + p.rows.shape[0];
      const at: number[] = [], local: number[] = [];
      ids.forEach((id, t) => { if (id >= p.start && id < end) { at.push(t); local.push(id - p.start); } });
      if (!at.length) continue;
      const rows = tf.gather(p.rows, tf.tensor1d(local, 'int32'));
      out.push(tf.scatterND(tf.tensor2d(at, [at.length, 1], 'int32'), rows, [ids.length, this.H]) as tf.Tensor2D);
    }
    return (out.length === 1 ? out[0] : tf.addN(out)) as tf.Tensor2D;
  }

  tensors(): tf.Tensor[] {
    return this.parts.flatMap((p) => (p.cols ? [p.rows, p.cols] : [p.rows]));
  }
}

/** The table left in the weight files: rows read on demand, parts uploaded one at a time. */
export class StreamedVocab implements Vocab {
  readonly resident = false;
  readonly ranges: { start: number; count: number }[];

  constructor(private readonly store: WeightStore, private readonly name: string, V: number, private readonly H: number, partRows: number) {
    this.ranges = vocabRanges(V, partRows);
  }

  part(i: number, cols: boolean): VocabPart {
    const { start, count } = this.ranges[i];
    const rows = tf.tensor2d(this.store.readRows(this.name, start, count), [count, this.H]);
    if (!cols) return { start, rows };
    try {
      return { start, rows, cols: tf.transpose(rows) as tf.Tensor2D };
    } catch (err) {
      rows.dispose();
      throw err;
    }
  }

  release(p: VocabPart): void {
    tf.dispose(p.cols ? [p.rows, p.cols] : [p.rows]);
  }

  gather(ids: number[]): tf.Tensor2D {
    // Each distinct token's row read once from the file, on the host; only [T, H] is uploaded.
    const H = this.H;
    const rowOf = new Map<number, Float32Array>();
    for (const id of ids) if (!rowOf.has(id)) rowOf.set(id, this.store.readRows(this.name, id, 1));
    const out = new Float32Array(ids.length * H);
    ids.forEach((id, t) => out.set(rowOf.get(id)!, t * H));
    return tf.tensor2d(out, [ids.length, H]);
  }

  tensors(): tf.Tensor[] { return []; }
}
