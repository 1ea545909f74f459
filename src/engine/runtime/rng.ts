// A small deterministic pseudo-random generator. Every seeded choice in DomLoRA (which records a probe samples,
// the LoRA `A` initialisation, bootstrap resamples) goes through this, so a run is reproducible from its seed on
// any machine and any backend; Math.random cannot be seeded.

/**
 * mulberry32: a 32-bit state generator, fast and statistically good enough for sampling and initialisation
 * (it passes gjrand's and PractRand's basic batteries up to several GB, far beyond what we draw).
 */
export class Rng {
  private state: number;

  /** Any finite number is a valid seed; equal seeds give equal streams. */
  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
    // Mix the seed once (a murmur3-style finaliser) so that nearby seeds such as 0, 1, 2 start far apart in the
    // stream instead of giving visibly similar first draws; the high bits of large seeds are folded in too.
    let h = (Math.trunc(seed) ^ Math.trunc(seed / 0x1_0000_0000)) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    this.state = (h ^ (h >>> 16)) >>> 0;
  }

  /** A float in [0, 1) with 32 random bits. */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  }

  /** An integer in [0, n). */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`nextInt needs a positive integer, got ${n}`);
    return Math.floor(this.next() * n);
  }

  /** A float in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }
}

/** The numbers 0..n-1 in an order fixed by `seed`. */
export function permutation(n: number, seed: number): number[] {
  return new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
}
