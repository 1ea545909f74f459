// The tables a pass reuses across records: causal (and sliding-window) masks per record length. RoPE's live in
// rope.ts. Both are bounded, so that training over many lengths does not fill the heap.
import * as tf from '@tensorflow/tfjs-core';

/**
 * Keeps a cache at `limit` entries. Entries of the length in use are never evicted (a pass uses one length
 * throughout).
 */
export function evictOthers<K, V>(cache: Map<K, V>, current: (k: K) => boolean, dispose: (v: V) => void, limit = 8): void {
  for (const [k, v] of cache) {
    if (cache.size <= limit) return;
    if (current(k)) continue;
    dispose(v);
    cache.delete(k);
  }
}

/** Additive causal masks for kv-group-major queries, per record length and window. */
export class MaskTables {
  private readonly cache = new Map<string, tf.Tensor2D>();
  constructor(private readonly rep: number) {}

  /**
   * [rep*T, T]: row i is position i mod T. With a sliding window W, a query at position i also sees only keys j with
   * i - j < W (transformers' sliding_window_overlay).
   */
  get(T: number, window: number | null): tf.Tensor2D {
    const W = window !== null && window < T ? window : T;
    const keyName = `${T}:${W}`;
    let m = this.cache.get(keyName);
    if (!m) {
      const data = new Float32Array(this.rep * T * T);
      for (let i = 0; i < this.rep * T; i++) {
        const pos = i % T;
        for (let j = 0; j < T; j++) if (j > pos || pos - j >= W) data[i * T + j] = -1e9;
      }
      m = tf.keep(tf.tensor2d(data, [this.rep * T, T]));
      this.cache.set(keyName, m);
      evictOthers(this.cache, (k) => k.startsWith(`${T}:`), (v) => v.dispose());
    }
    return m;
  }

  tensors(): tf.Tensor[] { return [...this.cache.values()]; }

  dispose(): void {
    tf.dispose(this.tensors());
    this.cache.clear();
  }
}
