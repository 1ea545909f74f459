// AdamW (Loshchilov & Hutter; torch.optim.AdamW's update): decoupled weight decay, bias-corrected first and second
// moments. Parameters and moments live in JS float32 arrays: small for LoRA, and exact to save and restore.

export interface AdamWHyper { beta1: number; beta2: number; eps: number; weightDecay: number }

/**
 * One AdamW step on a parameter, in place. `t` is the 1-based step number (for the bias corrections); the gradient
 * is divided by `gradDivisor` first (the records per step: the batch loss is the mean of the records' losses).
 */
export function adamwStep(p: Float32Array, grad: ArrayLike<number>, m: Float32Array, v: Float32Array, t: number, lr: number,
  h: AdamWHyper, gradDivisor = 1): void {
  const bc1 = 1 - Math.pow(h.beta1, t), bc2 = 1 - Math.pow(h.beta2, t);
  for (let k = 0; k < p.length; k++) {
    const g = grad[k] / gradDivisor;
    p[k] -= lr * h.weightDecay * p[k];
    m[k] = h.beta1 * m[k] + (1 - h.beta1) * g;
    v[k] = h.beta2 * v[k] + (1 - h.beta2) * g * g;
    p[k] -= (lr * (m[k] / bc1)) / (Math.sqrt(v[k] / bc2) + h.eps);
  }
}
