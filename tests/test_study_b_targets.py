"""Several target models in one study: a real Snakemake run with the bundled model under two
names, each writing its own self_rewrite, trained on its own sets and evaluated; the familiarity
matrix (every untrained target on every set); and a setting of one target reruns its jobs only."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_workflow import snakemake  # noqa: E402

from restyle.io import read_jsonl  # noqa: E402
from restyle.records import SFTRecord  # noqa: E402

TARGETS = ("a", "b")
SETS = ["studyB-gsm8k-human", "studyB-gsm8k-self_rewrite@a", "studyB-gsm8k-self_rewrite@b"]


def two_targets(tiny) -> dict:
    _, config = tiny
    model = config["models"]["tiny"]
    return {**config,
            "models": {name: model for name in TARGETS},
            "target_models": list(TARGETS),
            "teachers": {"local": {"backend": "local", "model_key": "a"},
                         "target": {"backend": "local", "model_key": "a"},
                         "b-itself": {"backend": "local", "model_key": "b"}},
            "data": {**config["data"], "gsm8k": {"per_split": {"train": 2, "test": 1}, "seed": 5}},
            "study_a": {"baselines": [], "rewrite": {"items_per_set": 1, "max_tokens": 8},
                        "rules": {"fixed": [{"name": "Exaggeration",
                                             "description": "Push a quantity to an extreme.",
                                             "instructions": "Exaggerate one number."}]}},
            # kept whatever the tiny model writes, so that every set has rows to train on
            "study_b": {"tasks": ["gsm8k"], "variants": ["human", "self_rewrite"], "items": 2,
                        "filter_correct": False, "generation": {"max_tokens": 8},
                        "target_teachers": {"a": "target", "b": "b-itself"}},
            "controls": [],
            "train": {"max_steps": 1, "batch_size": 2, "per_device_batch_size": 2,
                      "max_length": 128},
            "eval": {"tasks": ["gsm8k"], "gsm8k": {"max_new_tokens": 4}},
            "report": {"bootstrap_samples": 100}}


def jobs(log: str) -> list[tuple[str, list[str], str]]:
    """(rule, outputs, wildcards) of every job a Snakemake run printed."""
    out = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", log):
        rule = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        outputs = re.search(r"\n\s+output: (.*)", block)
        if rule and outputs:
            wildcards = re.search(r"\n\s+wildcards: (.*)", block)
            out.append((rule.group(1), outputs.group(1).split(", "),
                        wildcards.group(1) if wildcards else ""))
    return out


def owner(wildcards: str) -> str | None:
    """The target model a job works for: its {model}, or the model of its study B set label."""
    m = re.search(r"(?:^|, )model=([\w.-]+)", wildcards) or re.search(r"label=\w+@([\w.-]+)",
                                                                       wildcards)
    return m.group(1) if m else None


def test_two_targets_keep_their_own_files_matrix_and_reruns(tiny):
    workdir, _ = tiny
    config = two_targets(tiny)
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]

    # no file of one target is written by the other's jobs, and each has its own
    ran = jobs(result.stdout + result.stderr)
    owned = [(who, o) for _, outputs, wc in ran if (who := owner(wc)) for o in outputs]
    assert {who for who, _ in owned} == set(TARGETS)
    for who, path in owned:
        other = next(t for t in TARGETS if t != who)
        assert f"@{other}" not in path and f"/{other}/" not in path, (who, path)
    res = workdir / "results"
    for target in TARGETS:
        [row] = read_jsonl(res / f"sft/studyB-gsm8k-self_rewrite@{target}.jsonl",
                           SFTRecord.from_dict)[:1]
        assert row.provenance["set_model"] == target
        assert row.provenance["teacher_name"] == config["study_b"]["target_teachers"][target]
        trained = {p.parent.name for p in (res / "train" / target).glob("studyB-*/seed0")}
        assert trained == {"studyB-gsm8k-human", f"studyB-gsm8k-self_rewrite@{target}"}
    assert (res / "sft/studyB-gsm8k-human.jsonl").is_file()  # shared: one file, no model

    # the matrix: K targets x S sets, each cell counting the set's examples
    sizes = {name: len(read_jsonl(res / f"sft/{name}.jsonl", SFTRecord.from_dict))
             for name in SETS}
    report = res / "report"
    matrix = list(csv.DictReader((report / "study_b_familiarity_matrix.csv").open()))
    assert sorted((r["reader"], r["set"]) for r in matrix) == sorted(
        (t, s) for t in TARGETS for s in SETS)
    for r in matrix:
        assert int(r["examples"]) == sizes[r["set"]]
        assert r["writer"] == (r["set"].split("@")[1] if "@" in r["set"] else "")
        if r["set"] == r["own"]:  # the reader's own rewrite against itself
            assert float(r["ratio_vs_own"]) == 1.0
    # the same weights under two names read both rewrites alike
    own = {(r["reader"], r["set"]): float(r["corpus_perplexity"]) for r in matrix}
    assert own[("a", SETS[1])] == own[("b", SETS[1])]
    assert (report / "study_b_familiarity_matrix.png").stat().st_size > 5000
    summary = (report / "summary.md").read_text()
    for target in TARGETS:
        assert f"familiarity of target {target} (gsm8k): its own rewrite " \
               f"`studyB-gsm8k-self_rewrite@{target}`" in summary
    table = list(csv.DictReader((report / "study_b.csv").open()))
    assert {(r["target"], r["sft_set"]) for r in table} == {
        (t, s) for t in TARGETS for s in (SETS[0], f"studyB-gsm8k-self_rewrite@{t}")}

    # one target's training setting reruns that target's jobs only (and the report)
    config["train"]["per_model"] = {"b": {"learning_rate": 1.0e-3}}
    plan = snakemake(workdir, "-n", config=config)
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned = jobs(plan.stdout)
    assert {rule for rule, _, _ in planned} == {"train", "evaluate", "familiarity", "report"}
    assert {owner(wc) for rule, _, wc in planned if rule != "report"} == {"b"}
