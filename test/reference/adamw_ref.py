"""torch.optim.AdamW over a few steps, for test/unit/adamw.test.ts.

Reads a JSON request {p: [...], grads: [[...] per step], lrs: [...], beta1, beta2, eps, weight_decay, divisor}
(float64) and prints {"p": [...] after each step}. The gradient of each step is divided by `divisor` first, as the
trainer averages a batch's summed gradients.
"""
import json
import sys

import torch


def main():
    with open(sys.argv[1]) as f:
        req = json.load(f)
    p = torch.nn.Parameter(torch.tensor(req["p"], dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=req["lrs"][0], betas=(req["beta1"], req["beta2"]), eps=req["eps"],
                            weight_decay=req["weight_decay"])
    out = []
    for g, lr in zip(req["grads"], req["lrs"]):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(g, dtype=torch.float64) / req["divisor"]
        opt.step()
        out.append(p.detach().tolist())
    print(json.dumps({"p": out}))


if __name__ == "__main__":
    main()
