"""The Snakemake workflow itself: lint, config errors before any job, and real runs."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakemake.utils import update_config, validate

from conftest import REPO
from restyle.checks import ConfigError, add_own_teachers, check
from restyle.io import read_jsonl
from restyle.records import MathItem, MCItem, RuozhibaItem

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DATA_TARGETS = ["resources/models/tiny/manifest.json", "resources/data/ruozhiba.jsonl",
                *(f"resources/data/mmlu/{r}.jsonl" for r in ("train", "dev", "test")),
                *(f"resources/data/gsm8k/{s}.jsonl" for s in ("train", "test"))]


def snakemake(workdir, *args, config=None):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    if config is not None:
        path = Path(workdir) / "test-config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    # a bound for a hung run, not a speed check: on a 2-core machine loaded by other work the
    # first-page run of test_loud_failures took over 600 s (about 190 s quiet)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


def test_lint_is_clean():
    result = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_default_config_dry_run_shows_the_dag(tmp_path):
    result = subprocess.run([SNAKEMAKE, "-n", "--directory", str(tmp_path), "-s", str(REPO / "Snakefile"),
                             "--configfile", str(REPO / "config" / "config.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for rule in ("prepare_model", "prepare_mmlu", "prepare_ruozhiba", "prepare_gsm8k", "all"):
        assert f"{rule} " in result.stdout


@pytest.mark.parametrize("config, message", [
    ({"data": {"mmlu": {"bogus": 1}}}, "config data.mmlu.bogus: unknown key (allowed: csv_dir,"),
    ({"data": {"gsm8k": {"per_split": {"train": "x"}}}},
     "config data.gsm8k.per_split.train: 'x' is not of type 'integer', 'null'"),
    ({"data": {"mmlu": {"source": "s3"}}}, "config data.mmlu.source: 's3' is not one of"),
    ({"target_model": "llama"},
     "config target_model: replaced by target_models, a list (target_models: [llama])"),
    ({"modles": {}}, "config modles: unknown key"),
    ({"teachers": {"t": {"backend": "local", "model_key": "nope"}}},
     "config teachers.t.model_key: 'nope' is not a key of models"),
    ({"teachers": {"t": {"backend": "openai", "api_key": "sk-123"}}},
     "config teachers.t.api_key: unknown key"),
    ({"study_b": {"target_teacher": "gpt9"}},
     "config study_b.target_teacher: replaced by study_b.target_teachers"),
    ({"study_b": {"variants": ["bogus"]}}, "config study_b.variants.0: 'bogus' is not one of"),
    ({"paper_scale": True}, "config data.gsm8k.source: 'bundled' reads restyle's synthetic"),
])
def test_bad_config_stops_before_any_job_and_names_the_key(tmp_path, config, message):
    result = snakemake(tmp_path, config=config)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("config, message", [
    ({"target_models": ["llama"]}, "config target_models: 'llama' is not a key of models"),
    ({"study_b": {"variants": ["self_rewrite"], "target_teachers": {"smollm2-135m": "gpt9"}}},
     "config study_b.target_teachers.smollm2-135m: 'gpt9' is not a key of teachers"),
    ({"study_b": {"writers": ["c"]}}, "config study_b.writers: 'c' is not a key of models"),
    ({"models": {"b": {"source": "x"}}, "study_b": {
        "variants": ["self_rewrite"], "writers": ["b"], "target_teachers": {"b": "target"}}},
     "config study_b.target_teachers.b: teacher 'target' runs model 'smollm2-135m', not 'b'"),
    ({"study_b": {"variants": ["low_ppl"], "ppl_split_of": "self_rewrite", "writers": []}},
     "config study_b.ppl_split_of: self_rewrite halves each target's own set, but target "
     "smollm2-135m is not in study_b.writers"),
])
def test_target_models_and_writers_are_checked_over_the_default(config, message):
    """The checks of several target models, in process, on the default config with `config`
    merged over it."""
    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(merged, config)
    with pytest.raises(ConfigError) as error:
        check(merged, REPO / "config" / "schema.yaml")
    assert message in str(error.value)


def merged_configs(*names: str, over: dict | None = None) -> dict:
    """config/{names} merged in order, as --configfile merges them, then `over`."""
    merged = {}
    for name in names:
        update_config(merged, yaml.safe_load((REPO / "config" / name).read_text()))
    update_config(merged, over or {})
    return merged


def test_a_paper_scale_config_refuses_synthetic_gsm8k_and_names_the_key():
    """paper.yaml (paper_scale: true) passes the check as shipped, GSM8K from the hub; on the
    bundled, synthetic GSM8K it stops naming data.gsm8k.source, whichever stage reads GSM8K.
    The default config, with no paper_scale, may read the stand-in."""
    schema = REPO / "config" / "schema.yaml"
    paper = merged_configs("config.yaml", "paper.yaml")
    assert paper["paper_scale"] is True and paper["data"]["gsm8k"]["source"] == "hf"
    check(paper, schema)
    for over in ({}, {"study_b": {"tasks": ["math"]}}, {"eval": {"tasks": ["mmlu"]}}):
        config = merged_configs("config.yaml", "paper.yaml",
                                over={**over, "data": {"gsm8k": {"source": "bundled"}}})
        with pytest.raises(ConfigError) as error:
            check(config, schema)
        assert ("config data.gsm8k.source: 'bundled' reads restyle's synthetic arithmetic word "
                "problems, not gsm8k's real data, and paper_scale is true") in str(error.value)
        assert "set it to hf" in str(error.value)
    # a paper-scale run that reads no GSM8K at all, and the default config, pass
    check(merged_configs("config.yaml", "paper.yaml", over={
        "data": {"gsm8k": {"source": "bundled"}}, "study_b": {"tasks": ["math"]},
        "eval": {"tasks": ["mmlu", "math"]}}), schema)
    default = merged_configs("config.yaml")
    assert default["data"]["gsm8k"]["source"] == "bundled"
    check(default, schema)
    # the key given at the default (data.gsm8k left out) is checked too
    paper.pop("data")
    with pytest.raises(ConfigError, match="config data.gsm8k.source: 'bundled'"):
        check(paper, schema)


def test_teacher_backends_are_the_registered_ones():
    """config/schema.yaml names no backend: the check takes them from the registry
    (restyle.teacher.backends), so each registered backend passes and another is named with
    the key to fix and the choices."""
    from restyle.teacher import backends

    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name in backends.NAMES:
        config = copy.deepcopy(default)
        update_config(config, {"teachers": {"t": {"backend": name, "model": "m",
                                                  "model_key": "smollm2-135m"}}})
        check(config, REPO / "config" / "schema.yaml")
    update_config(default, {"teachers": {"t": {"backend": "vllm", "model": "m"}}})
    with pytest.raises(ConfigError) as error:
        check(default, REPO / "config" / "schema.yaml")
    assert f"config teachers.t.backend: 'vllm' is not one of {list(backends.NAMES)}" in str(
        error.value)


def test_a_writer_with_no_teacher_named_writes_through_a_local_teacher_of_itself():
    schema = REPO / "config" / "schema.yaml"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(config, {"models": {"b": {"source": "x"}}, "target_models": ["smollm2-135m", "b"],
                           "study_b": {"variants": ["human", "self_rewrite"]}})
    check(config, schema)
    add_own_teachers(config, schema)
    validate(config, str(schema))
    assert config["study_b"]["target_teachers"] == {"smollm2-135m": "target", "b": "self:b"}
    assert config["teachers"]["self:b"] == {**config["teachers"]["target"], "model_key": "b"}


def test_real_run_then_incremental_rerun(tiny):
    workdir, config = tiny
    result = snakemake(workdir, *DATA_TARGETS, config=config)
    assert result.returncode == 0, result.stderr
    data = workdir / "resources" / "data"
    mmlu = {r: read_jsonl(data / "mmlu" / f"{r}.jsonl", MCItem.from_dict) for r in ("train", "dev", "test")}
    assert {r: len(v) for r, v in mmlu.items()} == {"train": 4, "dev": 2, "test": 5}
    assert mmlu["test"][1].id == "mmlu/anatomy/test/1"
    [question] = read_jsonl(data / "ruozhiba.jsonl", RuozhibaItem.from_dict)
    assert question.question == "为什么？"
    assert len(read_jsonl(data / "gsm8k" / "test.jsonl", MathItem.from_dict)) == 2
    manifest = json.loads((workdir / "resources/models/tiny/manifest.json").read_text())
    assert manifest["path"] == config["models"]["tiny"]["source"]
    assert "test: 5 items, 1 subjects" in (workdir / "logs" / "prepare_mmlu.log").read_text()

    assert "Nothing to be done" in snakemake(workdir, "-n", *DATA_TARGETS, config=config).stdout

    config["data"]["gsm8k"]["seed"] = 6  # a changed parameter reruns that rule only
    plan = snakemake(workdir, "-n", *DATA_TARGETS, config=config).stdout
    assert "rule prepare_gsm8k:" in plan
    assert "prepare_mmlu" not in plan and "prepare_ruozhiba" not in plan


def test_failed_job_leaves_no_output_and_logs_the_line(tiny):
    workdir, config = tiny
    bad = Path(config["data"]["ruozhiba"]["path"])
    bad.write_text(bad.read_text() + '{"instruction": "q"}\n')
    result = snakemake(workdir, "resources/data/ruozhiba.jsonl", config=config)
    assert result.returncode != 0
    assert not (workdir / "resources" / "data" / "ruozhiba.jsonl").exists()
    log = (workdir / "logs" / "prepare_ruozhiba.log").read_text()
    assert f"{bad}:2: missing or non-text field 'output'" in log


def test_scoring_jobs_ask_one_gpu_of_the_training_partition(tmp_path):
    config = {"train": {"per_model": {"smollm2-135m": {
        "resources": {"gpu": 4, "slurm_partition": "gpu-a100", "slurm_account": "lab"}}}}}
    plan = snakemake(tmp_path, "-n", "results/eval/smollm2-135m/base/mmlu/summary.csv",
                     "results/familiarity/smollm2-135m/base/summary.csv", config=config)
    assert plan.returncode == 0, plan.stderr
    jobs = [line for line in plan.stdout.splitlines() if "resources:" in line and "gpu=" in line]
    assert len(jobs) == 2
    for line in jobs:
        assert "gpu=1," in line and "slurm_partition=gpu-a100" in line and "slurm_account=lab" in line
