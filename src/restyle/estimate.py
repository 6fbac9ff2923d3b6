"""The teacher bill of the configured run, before anything is sent (`snakemake -f estimate`).

Every stage's requests are built by the stage's own code (`restyle.study_a.extraction`,
`restyle.study_a.rewrite`, `restyle.study_b.variants`) and counted by
`restyle.teacher.estimate`, so the estimate asks exactly what the run will ask. A request whose
prompt holds an earlier teacher reply cannot be known yet; it is built from a stand-in reply as
long as the config allows and its row says `basis` "from config" (otherwise "exact"):

- rule extraction (`study_a_rules:extract`) is exact; the consolidation is one request showing
  one candidate per extraction request, each as long as `extract.max_tokens`; `instructions` is
  one request per rule (`count`; up to twice that when the consolidation's rules lack
  instructions);
- rule rewrites (`studyA-{rule}`, every rule's job summed) are exact for `rules.fixed`; extracted
  rules are `count` stand-in rules whose description fills `consolidate.max_tokens / count`
  tokens and whose instructions fill `instructions.max_tokens`;
- study B's minimum_change corrections are built from the drafts in the teacher cache, exact
  once every draft is there; a draft not there yet is a stand-in of `generation.max_tokens`
  tokens (a question whose draft comes back empty is not corrected, so the run may ask fewer).

Completion tokens are the `max_tokens` bound. A request two stages make alike (the same model as
teacher and target: minimum_change's drafts are the teacher variant's answers) is to send in the
first stage listed and cached in the later one; the run sends it once, in whichever job runs
first. Stage names are the `stage` column of the accounting CSVs the jobs write, so
`restyle.accounting.compare` can set the estimate beside the bill after the run.

`make estimate` (`python -m restyle.estimate SNAKEMAKE_COMMAND...`) runs the rule in a scratch
folder of the work folder, one per config (`scratch_command`), never in the work folder itself:
estimating another config there would re-prepare the data of the run in it at that config's
size and put every job of the run out of date. The run itself makes its own
results/estimate.csv (the report's teacher bill reads it).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from restyle import tasks, teacher
from restyle.accounting import RULE_REWRITES, RULES_STAGE, TOTAL
from restyle.cache import Cache
from restyle.io import read_jsonl
from restyle.records import MCItem, RuozhibaItem
from restyle.study_a import extraction, rewrite
from restyle.study_b import PREFIX, parse_label, parse_set_name, variants
from restyle.teacher import DEFAULT_MAX_TOKENS, Request, Result

EXACT, FROM_CONFIG = "exact", "from config"
# results/estimate.csv; tokens and costs as in the accounting CSVs: prompt_tokens,
# completion_tokens, cost over every request of the stage, run_* over those not cached yet;
# cost at list price, batch_cost at the Batch API's; an empty cost is an unknown price
COLUMNS = ["stage", "basis", "teacher", "model", "counter", "requests", "cached", "to_send",
           "prompt_tokens", "completion_tokens", "cost", "batch_cost", "run_prompt_tokens",
           "run_completion_tokens", "run_cost", "run_batch_cost"]


@dataclass
class Planned:
    stage: str
    basis: str
    teacher: str  # its key in config `teachers`
    backend: dict  # restyle.teacher backend dict
    requests: list[Request]


def stand_in(tokens: int, author: str = "") -> str:
    """Text of about `tokens` tokens in any tokenizer (a common word, one token each) and in
    `approx_tokens`' 4 characters a token; `author` (the model that would write it) ends it, so
    that two models' stand-ins differ as their replies would (two targets' minimum_change drafts
    lead to two corrections to pay for, not one)."""
    words = ["the"] * tokens
    return " ".join(words[:-1] + [author] if author and words else words)


def study_a(cfg: dict, backend: dict, mmlu_train: str | Path,
            ruozhiba: str | Path | None) -> list[Planned]:
    """What study A asks its teacher (config `study_a`; `ruozhiba` only when rules are
    extracted)."""
    name, out = cfg["teacher"], []
    rcfg = cfg["rules"]
    if rcfg["fixed"]:
        rule_list = [extraction.wording(r) for r in extraction.fixed(rcfg["fixed"])]
        basis = EXACT
    else:
        structured = extraction.structured_output(rcfg, backend)
        extract_requests = [req for req, _ in extraction.extraction_requests(
            read_jsonl(ruozhiba, RuozhibaItem.from_dict), rcfg, structured)]
        candidates = [{"name": None, "description": stand_in(rcfg["extract"]["max_tokens"])}
                      for _ in extract_requests]
        described = stand_in(rcfg["consolidate"]["max_tokens"] // rcfg["count"])
        rule_list = [{"slug": f"rule-{i}", "name": f"Rule {i}", "description": described,
                      "instructions": stand_in(rcfg["instructions"]["max_tokens"])}
                     for i in range(1, rcfg["count"] + 1)]
        out += [Planned(f"{RULES_STAGE}:extract", EXACT, name, backend, extract_requests),
                Planned(f"{RULES_STAGE}:consolidate", FROM_CONFIG, name, backend,
                        [extraction.consolidation_request(candidates, rcfg, structured)]),
                Planned(f"{RULES_STAGE}:instructions", FROM_CONFIG, name, backend,
                        extraction.instructions_requests(rule_list, rcfg))]
        basis = FROM_CONFIG
    items = rewrite.select_items(read_jsonl(mmlu_train, MCItem.from_dict),
                                 cfg["rewrite"]["items_per_set"])
    if rule_list:
        out.append(Planned(RULE_REWRITES, basis, name, backend,
                           [req for rule in rule_list
                            for req in rewrite.rewrite_requests(rule, items, cfg["rewrite"])]))
    if "teacher_plain" in cfg["baselines"]:
        out.append(Planned("studyA-teacher_plain", EXACT, name, backend, rewrite.plain_requests(
            items, {**cfg["rewrite"], **cfg["teacher_plain"]})))
    return out


class _Recorder:
    """In place of a study B job's `teacher.Session`: keeps each step's requests and answers them
    as the run would be answered, from the teacher cache where the answer is there and with a
    stand-in reply of `max_tokens` tokens otherwise. A step built on a stand-in (minimum_change's
    corrections before the drafts are in) is marked "from config"."""

    def __init__(self, sft_set: str, cache: str | Path):
        self.sft_set, self.cache = sft_set, cache
        self.planned: list[Planned] = []
        self.stood_in = False  # a stand-in reply was given: later steps are not exact

    def ask(self, requests: list[Request], backend: dict, step: str) -> list[Result]:
        model = teacher.model_name(backend)
        # the rules' backends carry their teacher's config key (rules/common.smk teacher_backend)
        self.planned.append(Planned(f"{self.sft_set}:{step}", FROM_CONFIG if self.stood_in
                                    else EXACT, backend.get("name") or model, backend, requests))
        keys = [teacher.cache_key(r, backend["backend"], model) for r in requests]
        cache = Cache(self.cache)
        try:
            found = cache.get_many(keys)
        finally:
            cache.close()
        self.stood_in |= len(found) < len(set(keys))
        return [Result(r.id, found[k].text if k in found else stand_in(
            r.params.get("max_tokens", DEFAULT_MAX_TOKENS), model), None, True, None, {}, False)
            for r, k in zip(requests, keys)]

    def totals(self) -> dict:
        return {"prompt_tokens": 0, "completion_tokens": 0, "cost": None}


def study_b(cfg: dict, backends: dict[str, dict], names: dict[str, dict[str, str]],
            task_files: dict[str, str | Path], cache: str | Path) -> list[Planned]:
    """What study B asks (config `study_b`): `backends`/`names` map each set label
    (restyle.study_b.label: a variant, with `@{model}` for a per-model one) to its roles' backend
    dicts and teacher keys, as the study_b_variant rule's params do. A per-model set's stages are
    named after it, so each target model's requests are counted apart."""
    out = []
    for name in cfg["tasks"]:
        task = tasks.get(name, "study_b.tasks")
        items = variants.load_items(task, task_files[name], cfg["items"])
        for label in backends:
            variant, model = parse_label(label)
            recorder = _Recorder(variants.sft_set_name(name, variant, model), cache)
            # no target model is loaded: stand-in perplexities, and stand-in replies are not
            # judged (no request depends on either)
            variants.build(variants.Context(task, variant, cfg, items, recorder,
                                            scorer=lambda records: [0.0] * len(records),
                                            source_records=[], backends=backends[label],
                                            names=names[label], judge=False, model=model))
            out += recorder.planned
    return out


def table(planned: list[Planned], cache: str | Path, prices: dict | None) -> list[dict]:
    """One row (COLUMNS) per stage, in the order planned, then totals: one per teacher when
    there are several (a self-hosted teacher's unknown price leaves the others' known), and
    TOTAL. Nothing is sent."""
    rows, asked = [], set()
    for p in planned:
        est = teacher.estimate(p.requests, p.backend, cache, prices, asked)
        rows.append({"stage": p.stage, "basis": p.basis, "teacher": p.teacher,
                     "model": teacher.model_name(p.backend), **est})
    names = list(dict.fromkeys(r["teacher"] for r in rows))
    per_teacher = ([_total(f"{TOTAL} {name}", [r for r in rows if r["teacher"] == name])
                    for name in names] if len(names) > 1 else [])
    # with several target models, each one's own study B sets (every teacher they ask)
    models = {r["stage"]: _set_model(r["stage"]) for r in rows}
    targets = list(dict.fromkeys(m for m in models.values() if m))
    per_target = ([_total(f"{TOTAL} for {m}", [r for r in rows if models[r["stage"]] == m])
                   for m in targets] if len(targets) > 1 else [])
    return [*rows, *per_teacher, *per_target, _total(TOTAL, rows)]


def _set_model(stage: str) -> str | None:
    """The model of a per-model study B set's stage (`studyB-{task}-{variant}@{model}:{step}`)."""
    name = stage.split(":")[0]
    return parse_set_name(name)[2] if name.startswith(PREFIX) else None


def _total(stage: str, rows: list[dict]) -> dict:
    total = {"stage": stage, "basis": EXACT if all(r["basis"] == EXACT for r in rows)
             else FROM_CONFIG, "teacher": "/".join(dict.fromkeys(r["teacher"] for r in rows)),
             "model": "/".join(dict.fromkeys(r["model"] for r in rows)),
             "counter": "/".join(dict.fromkeys(r["counter"] for r in rows))}
    for col in COLUMNS[COLUMNS.index("requests"):]:
        values = [r[col] for r in rows]
        # a cost is unknown when one stage's price is: never a sum that silently skips it
        total[col] = None if None in values else sum(values)
    return total


def format_table(rows: list[dict]) -> str:
    """The console table: what each stage asks and what sending it now costs."""
    head = ["stage", "basis", "tokens", "requests", "cached", "to send", "prompt tok",
            "max completion tok", "cost USD", "batch USD"]
    body = [[r["stage"], r["basis"], r["counter"], *(f"{r[k]:,}" for k in (
        "requests", "cached", "to_send", "run_prompt_tokens", "run_completion_tokens")),
        *("unknown" if r[k] is None else f"{r[k]:,.2f}" for k in ("run_cost", "run_batch_cost"))]
        for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) if i < 3 else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(line, widths))) for line in [head, *body]]
    first_total = 1 + next(i for i, r in enumerate(rows) if r["stage"].startswith(TOTAL))
    return "\n".join([*lines[:first_total], "-" * len(lines[0]), *lines[first_total:]])


# ---------------------------------------------------------------- make estimate

SCRATCH = ".estimate"  # in the work folder: .estimate/<config>/, kept so a second estimate is quick
# the work folder's entries a scratch folder does not share: the run's outputs and state
RUN_ENTRIES = {"resources", "results", "logs", ".snakemake", SCRATCH}


def scratch_command(command: list[str]) -> tuple[list[str], Path]:
    """The snakemake `command` (with the user's arguments) turned into the estimate in a scratch
    folder of its own, and that folder: `.estimate/<hash of the arguments>/` in the work folder
    (-d/--directory, else the current one). The folder links every entry of the work folder but
    the run's outputs, so relative paths in a config (data sources, the teacher cache's folder
    resources/teacher) mean what they mean in the run; snakemake re-prepares only what the
    config changed since the last estimate there."""
    args, work, i = [], Path.cwd(), 0
    while i < len(command):
        arg = command[i]
        if arg in ("-d", "--directory"):
            work, i = Path(command[i + 1]), i + 2
            continue
        if arg.startswith("--directory="):
            work = Path(arg.split("=", 1)[1])
        else:
            args.append(arg)
        i += 1
    work = work.resolve()
    key = hashlib.sha256("\0".join(args[1:]).encode()).hexdigest()[:12]
    scratch = work / SCRATCH / key
    (scratch / "resources").mkdir(parents=True, exist_ok=True)
    shared = [p for p in work.iterdir() if p.name not in RUN_ENTRIES]
    if (work / "resources" / "teacher").is_dir():  # the run's teacher cache: what is cached
        shared.append(work / "resources" / "teacher")
    for entry in shared:
        link = scratch / entry.relative_to(work)
        if not link.is_symlink():
            link.symlink_to(entry)
    return [*args, "-d", str(scratch), "-f", "estimate"], scratch


if __name__ == "__main__":
    estimate_command, folder = scratch_command(sys.argv[1:])
    print(f"restyle: estimating in {folder}, apart from the run in this folder", flush=True)
    sys.exit(subprocess.run(estimate_command).returncode)
