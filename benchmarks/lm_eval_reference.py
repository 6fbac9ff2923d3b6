"""lm-evaluation-harness on restyle's MMLU items, for the agreement test and the speed benchmark.

The task YAML reproduces lm-eval's own `mmlu` tasks (same description, prompt, choices, scoring
and k-shot examples: the first k dev items of the subject) over local JSONL files, one task per
subject as lm-eval has, so both tools see exactly the same questions and examples.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from restyle.records import LETTERS, MCItem

TASK = "restyle_mmlu_reference_{subject}"
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {subject_text}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
"""


def _write_jsonl(path: Path, items: Sequence[MCItem]) -> None:
    path.write_text("".join(json.dumps({"id": it.id, "question": it.question,
                                        "choices": it.choices, "answer": it.answer}) + "\n"
                            for it in items))


def lm_eval_predictions(model_path: str, items: Sequence[MCItem], workdir: Path,
                        batch_size: int = 8, dev: Sequence[MCItem] = (),
                        k_shot: int = 0) -> tuple[list[str], float]:
    """lm-eval's predicted letter per item (in item order) and its wall time in seconds (the
    `simple_evaluate` call, which loads the model too); `k_shot` examples from `dev`."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    workdir.mkdir(parents=True, exist_ok=True)
    by_subject: dict[str, dict[str, list[MCItem]]] = defaultdict(lambda: {"test": [], "dev": []})
    for split, pool in (("test", items), ("dev", dev)):
        for it in pool:
            by_subject[it.subject][split].append(it)
    tasks = []
    for subject, splits in by_subject.items():
        if not splits["test"]:
            continue
        test, dev_file = workdir / f"{subject}.test.jsonl", workdir / f"{subject}.dev.jsonl"
        _write_jsonl(test, splits["test"])
        _write_jsonl(dev_file, splits["dev"])
        task = TASK.format(subject=subject)
        (workdir / f"{task}.yaml").write_text(TASK_YAML.format(
            task=task, test=test, subject_text=subject.replace("_", " "),
            # an empty file does not load; at 0-shot lm-eval reads no example from it anyway
            dev=dev_file if splits["dev"] else test))
        tasks.append(task)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_path},dtype=float32",
                                  tasks=tasks, task_manager=TaskManager(include_path=str(workdir)),
                                  num_fewshot=k_shot, batch_size=batch_size, log_samples=True,
                                  device="cpu")
    seconds = time.perf_counter() - start
    preds = {}
    for task in tasks:
        for sample in out["samples"][task]:
            scores = [resp[0][0] for resp in sample["resps"]]
            preds[sample["doc"]["id"]] = LETTERS[scores.index(max(scores))]
    return [preds[it.id] for it in items], seconds
