#!/usr/bin/python3
"""Validates the reference itself against stories260K's golden values (computed by two other implementations).

Usage: /usr/bin/python3 test/reference/check_golden.py [MODEL_DIR]   (default test/fixtures/models/stories260K)
Prints one line per check and PASS or FAIL last; exit status 0 on PASS, 1 on FAIL.
"""

import json
import os
import sys

sys.dont_write_bytecode = True

import llama_ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.normpath(os.path.join(HERE, "..", "fixtures", "models", "stories260K"))


def main(argv):
    model_dir = argv[1] if len(argv) > 1 else DEFAULT_DIR
    with open(os.path.join(model_dir, "golden_reference.json")) as f:
        gold = json.load(f)
    texts = ["tinystories_greedy_text", "gsm8k_train_0_question"]
    prompt = gold["prompt_once_upon_a_time"]["ids_with_bos"]
    want_greedy = gold["greedy_from_bos_first20"]
    records = [{"input_ids": gold[t]["ids_with_bos"]} for t in texts] + [{"input_ids": prompt}]
    out = llama_ref.handle({
        "model_dir": model_dir, "mode": "loss", "records": records,
        "greedy": {"prompt": want_greedy[:1], "steps": len(want_greedy) - 1},
    })
    ok = True

    def check(name, good, detail):
        nonlocal ok
        ok &= bool(good)
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}")

    for t, got in zip(texts, out["losses"]):
        want = gold[t]["mean_next_token_ce_nats"]
        check(f"mean CE {t}", abs(got - want) <= 1e-4, f"{got:.6f} vs {want:.6f} (|diff| {abs(got - want):.2e})")
    check("greedy 20 ids from BOS", out["greedySequence"] == want_greedy, f"{out['greedySequence']}")
    last = out["lastLogits"][2]
    top = sorted(range(len(last)), key=lambda i: -last[i])[:5]
    for (want_id, want_v), got_id in zip(gold["prompt_once_upon_a_time"]["last_logits_top5"], top):
        check(f"prompt top-5 id {want_id}", got_id == want_id and abs(last[want_id] - want_v) <= 1e-3,
              f"got id {got_id} = {last[got_id]:.5f}, want {want_v:.5f}")
    want_sum = gold["prompt_once_upon_a_time"].get("logits_sum_last")
    if want_sum is not None:
        # The sum of 512 logits of size ~10 agrees to ~1e-3 when every logit does; it catches a wrong tail.
        got_sum = sum(last)
        check("prompt last-logit sum", abs(got_sum - want_sum) <= 1e-2, f"{got_sum:.5f} vs {want_sum:.5f}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
