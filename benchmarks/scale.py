"""Rehearsal of the paper-scale run (config/paper.yaml) on this machine: every teacher stage, as
real Snakemake jobs, against the local chat-completions server (tests/chat_server.py) with a
fixed latency and no faults, on the bundled MMLU (all 57 subjects) and the GSM8K-format
generator.

The server answers like a teacher that keeps the format (rewrites that pass the gate, right final
answers), so the sets are not empty and the planned DAG after the stages is the paper's: training,
evaluation and familiarity jobs for every set and seed. best_of_n's samples are answered wrong,
so no target model is loaded to score them; low_ppl/high_ppl (no teacher) are left out. Changes
to the paper config: the teachers point at the local server with no rate limits, the 8 rules are
fixed (extraction needs a real teacher), both target models are the bundled SmolLM2 (nothing is
trained), GSM8K is the bundled generator (paper_scale off).

Per scale (a fraction of the paper's items: MMLU train items per subject, GSM8K problems and
study B questions), it prints: items (MMLU train + GSM8K train), teacher requests sent, wall time
of the Snakemake run of the teacher stages and the part of it inside the jobs after start-up
(first to last log line), requests/s inside the jobs against the ideal (gpt4o's max_in_flight /
latency), cache size on disk, the fully cached rerun of every teacher job (0 requests sent;
whole and inside the jobs), the estimate command, `snakemake -n` of the whole DAG and its job
count, and the peak RSS of the largest process of the teacher run and of the planning.

Run: .venv/bin/python benchmarks/scale.py [--scale 0.125 1] [--latency 0.05] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from chat_server import ChatServer  # noqa: E402
from timing import load_average  # noqa: E402

from restyle import study_b, tasks  # noqa: E402
from restyle.io import read_jsonl  # noqa: E402
from restyle.study_a import rules  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PAPER = yaml.safe_load((REPO / "config/paper.yaml").read_text())
# the text after each study B question (paper.yaml keeps the schema's defaults)
INSTRUCTIONS = [f"\n\n{p['default']}" for p in yaml.safe_load(
    (REPO / "config/schema.yaml").read_text())["properties"]["study_b"]["properties"][
    "instructions"]["properties"].values()]
VARIANTS = [v for v in PAPER["study_b"]["variants"] if v not in study_b.PPL_SPLITS]
GSM8K_SPLITS = {"train": 7473, "test": 1319}  # openai/gsm8k's sizes (null in paper.yaml: all)
RULES = [{"name": f"Rule {i}", "description": f"Rule number {i}, said in a memorable way.",
          "instructions": "Say the question so that it sticks."} for i in range(1, 9)]
TEACHER_RULES = ["study_a_rewrite", "study_b_variant"]
_REWRITE = re.compile(r"\n\nQuestion: (.*?)\n(A\. .*?\nB\. .*?\nC\. .*?\nD\. .*?)\n"
                      r"Correct answer: ([A-D])\n", re.S)
_PLAIN = re.compile(r"The correct answer is ([A-D])\. Explain")
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # restyle.logs' format
_QUESTION = re.compile(r"Question:\n(.*?)\n\n(?:Answer:|Correct final answer:)", re.S)


def overrides(scale: float, url: str) -> dict:
    """What the rehearsal changes in config/paper.yaml (module docstring)."""
    def n(size: int) -> int:
        return max(1, round(size * scale))

    data = PAPER["data"]
    return {
        "models": {m: {"source": "bundled:smollm2-135m-instruct"} for m in PAPER["target_models"]},
        "teachers": {"gpt4o": {"base_url": url, "api_key_env": None, "requests_per_minute": 0,
                               "tokens_per_minute": 0},
                     **{PAPER["study_b"]["target_teachers"][m]: {"base_url": url}
                        for m in PAPER["target_models"]}},
        # a rehearsal, not a result: GSM8K's offline stand-in at the sizes of openai/gsm8k's
        # splits that paper.yaml reads, which paper_scale would refuse
        "paper_scale": False,
        "data": {"mmlu": {"per_subject": {"train": n(data["mmlu"]["per_subject"]["train"])}},
                 "gsm8k": {"source": "bundled", "per_split": {
                     k: n(v or GSM8K_SPLITS[k]) for k, v in data["gsm8k"]["per_split"].items()}}},
        "study_a": {"rules": {"fixed": RULES}},
        "study_b": {"items": n(PAPER["study_b"]["items"]), "variants": VARIANTS},
    }


class TeacherLike(ChatServer):
    """The test server answering like a teacher that keeps the format: study A's rewrites and
    teacher_plain with the gold letter, study B with the gold answer (the human one, found by
    the question; `learn` reads them), best_of_n's samples wrongly."""

    def learn(self, workdir: Path) -> None:
        study_b_tasks = [tasks.get(name) for name in PAPER["study_b"]["tasks"]]
        self.answers = {
            task.question(item): task.human_answer(item) for task in study_b_tasks
            for item in read_jsonl(workdir / task.path("train"), task.record.from_dict)}

    def completion(self, body: dict, name: str, fault: str | None) -> dict:
        out = super().completion(body, name, fault)
        out["choices"][0]["message"]["content"] = self.answer(body)
        return out

    def answer(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        if body.get("temperature", 0) > 0:
            return "I am not sure."
        if m := _REWRITE.search(content):
            return (f"Question: {m[1]}\n{m[2]}\nReasoning: The rule makes the fact stick.\n"
                    f"Answer: {m[3]}")
        if m := _PLAIN.search(content):
            return f"The facts in the question settle it.\nAnswer: {m[1]}"
        m = _QUESTION.search(content)
        question = m[1] if m else next((content.split(i)[0] for i in INSTRUCTIONS
                                        if i in content), "")
        return self.answers.get(question, "I do not know.")


# runs a command and says on stderr's last line the peak RSS (KiB) of the largest process of its
# tree: Snakemake's own benchmark files sample every 30 s and miss jobs this short
PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(code)")


def snakemake(workdir: Path, config: Path, *args: str) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak RSS of one process in MiB) of a snakemake run that must
    succeed."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
           str(REPO / "config/paper.yaml"), str(config), "--cores", "2", *args]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return time.perf_counter() - start, done.stdout, int(done.stderr.split()[-1]) / 1024


def in_job_seconds(workdir: Path) -> float:
    """Seconds the teacher jobs spent from their first log line (the teacher's "N requests, N
    cached, N to send", after start-up and imports) to their last (the set written)."""
    total = 0.0
    for log in [*(workdir / "logs/study_a/rewrite").glob("*.log"),
                *(workdir / "logs/study_b").glob("*/*.log")]:
        stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                  for line in log.read_text().splitlines() if STAMP.match(line)]
        total += (stamps[-1] - stamps[0]).total_seconds()
    return total


def run_scale(scale: float, latency: float, root: Path) -> dict:
    workdir = root / f"scale-{scale:g}"
    config = workdir / "bench.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    with TeacherLike(latency=latency) as server:
        config.write_text(yaml.safe_dump(overrides(scale, server.url)))
        snakemake(workdir, config, *(f"resources/models/{m}/manifest.json"
                                     for m in PAPER["target_models"]),
                  "resources/data/mmlu/train.jsonl", "resources/data/gsm8k/train.jsonl")
        server.learn(workdir)
        estimate_s, _, _ = snakemake(workdir, config, "-f", "estimate")
        sets = [f"results/sft/studyA-{s}.jsonl"
                for s in [*(r["slug"] for r in rules.fixed(RULES)), "teacher_plain"]]
        sets += [f"results/sft/{study_b.sft_set_name(t, *study_b.parse_label(label))}.jsonl"
                 for t in PAPER["study_b"]["tasks"] for label in study_b.labels(
                     {**PAPER["study_b"], "variants": VARIANTS, "writers": None},
                     PAPER["target_models"])]
        wall, _, rss = snakemake(workdir, config, *sets)
        sent, in_jobs = len(server.requests), in_job_seconds(workdir)
        rerun, _, _ = snakemake(workdir, config, "--forcerun", *TEACHER_RULES, "--", *sets)
        assert len(server.requests) == sent, "the cached rerun sent requests"
        rerun_in_jobs = in_job_seconds(workdir)
        plan_s, plan, plan_rss = snakemake(workdir, config, "-n")
    items = [sum(1 for _ in open(workdir / tasks.get(name).path("train")))
             for name in PAPER["study_b"]["tasks"]]
    cache = sum(f.stat().st_size for f in (workdir / "resources/teacher").iterdir())
    return {"scale": f"{scale:g}", "items": "+".join(map(str, reversed(items))),
            "requests": str(sent), "wall s": f"{wall:.1f}", "in jobs s": f"{in_jobs:.1f}",
            "req/s": f"{sent / in_jobs:.0f}",
            "ideal": f"{PAPER['teachers']['gpt4o']['max_in_flight'] / latency:.0f}",
            "cache MB": f"{cache / 2**20:.1f}", "cached rerun s": f"{rerun:.1f}",
            "cached in jobs s": f"{rerun_in_jobs:.2f}", "estimate s": f"{estimate_s:.1f}",
            "plan s": f"{plan_s:.1f}", "jobs": re.search(r"^total\s+(\d+)", plan, re.M)[1],
            "RSS MB run": f"{rss:.0f}", "RSS MB plan": f"{plan_rss:.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[0.125, 1.0],
                        help="fractions of the paper's items (default: 1/8 and all)")
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds a request")
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_scale(s, args.latency, args.keep or Path(tmp)) for s in args.scale]
    print(f"paper-scale teacher stages, server latency {args.latency} s; {load_average()}\n")
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")


if __name__ == "__main__":
    main()
