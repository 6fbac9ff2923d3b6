"""lm-evaluation-harness on restyle's MMLU items, for the agreement test and the speed benchmark.

The task YAML reproduces lm-eval's own `mmlu` task (same description, prompt, choices and
scoring) over a local JSONL file, so both tools see exactly the same questions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from restyle.records import LETTERS, MCItem

TASK = "restyle_mmlu_reference"
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject_text}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
"""


def lm_eval_predictions(model_path: str, items: Sequence[MCItem], workdir: Path,
                        batch_size: int = 8) -> tuple[list[str], float]:
    """lm-eval's predicted letter per item (in item order) and its wall time in seconds."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "items.jsonl"
    data.write_text("".join(json.dumps({"id": it.id, "question": it.question, "choices": it.choices,
                                        "answer": it.answer,
                                        "subject_text": it.subject.replace("_", " ")}) + "\n"
                            for it in items))
    (workdir / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data))
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_path},dtype=float32",
                                  tasks=[TASK], task_manager=TaskManager(include_path=str(workdir)),
                                  batch_size=batch_size, log_samples=True, device="cpu")
    seconds = time.perf_counter() - start
    preds = {}
    for sample in out["samples"][TASK]:
        scores = [resp[0][0] for resp in sample["resps"]]
        preds[sample["doc"]["id"]] = LETTERS[scores.index(max(scores))]
    return [preds[it.id] for it in items], seconds
