"""The teacher bill of the configured run, before anything is sent (`snakemake -f estimate`).

Every stage's requests are built by the stage's own code (`restyle.study_a.rules`,
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
import logging
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from restyle import controls, sizing, tasks, teacher
from restyle.accounting import TOTAL
from restyle.cache import Cache
from restyle.io import read_jsonl
from restyle.records import RuozhibaItem, SFTRecord
from restyle.study_a import rewrite, rules
from restyle.study_a import TASK as STUDY_A_TASK
from restyle.study_a import ORIGINAL, RULE_REWRITES, RULES_STAGE, TEACHER_PLAIN
from restyle.study_a import sft_set_name as study_a_sft_set
from restyle.study_b import PER_MODEL, PPL_SPLITS, PREFIX, parse_label, parse_set_name, variants
from restyle.teacher import DEFAULT_MAX_TOKENS, Request, Result

log = logging.getLogger(__name__)

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
        rule_list = [rules.wording(r) for r in rules.fixed(rcfg["fixed"])]
        basis = EXACT
    else:
        structured = rules.structured_output(rcfg, backend)
        extract_requests = [req for req, _ in rules.extraction_requests(
            read_jsonl(ruozhiba, RuozhibaItem.from_dict), rcfg, structured)]
        candidates = [{"name": None, "description": stand_in(rcfg["extract"]["max_tokens"])}
                      for _ in extract_requests]
        described = stand_in(rcfg["consolidate"]["max_tokens"] // rcfg["count"])
        rule_list = [{"slug": f"rule-{i}", "name": f"Rule {i}", "description": described,
                      "instructions": stand_in(rcfg["instructions"]["max_tokens"])}
                     for i in range(1, rcfg["count"] + 1)]
        out += [Planned(f"{RULES_STAGE}:extract", EXACT, name, backend, extract_requests),
                Planned(f"{RULES_STAGE}:consolidate", FROM_CONFIG, name, backend,
                        [rules.consolidation_request(candidates, rcfg, structured)]),
                Planned(f"{RULES_STAGE}:instructions", FROM_CONFIG, name, backend,
                        rules.instructions_requests(rule_list, rcfg))]
        basis = FROM_CONFIG
    items = rewrite.load_items(mmlu_train, cfg["rewrite"]["items_per_set"])
    if rule_list:
        out.append(Planned(RULE_REWRITES, basis, name, backend,
                           [req for rule in rule_list for req in rewrite.set_requests(
                               items, cfg["rewrite"], rule, None)]))
    if TEACHER_PLAIN in cfg["baselines"]:
        out.append(Planned(study_a_sft_set(TEACHER_PLAIN), EXACT, name, backend,
                           rewrite.set_requests(items, cfg["rewrite"], None,
                                                cfg["teacher_plain"])))
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
            task_files: dict[str, str | Path], cache: str | Path,
            sets: dict[str, Arm] | None = None,
            releases: dict[str, dict[str, dict | None]] | None = None) -> list[Planned]:
    """What study B asks (config `study_b`): `backends`/`names` map each set label
    (restyle.study_b.label: a variant, with `@{model}` for a per-model one) to its roles' backend
    dicts and teacher keys, as the study_b_variant rule's params do. A per-model set's stages are
    named after it, so each target model's requests are counted apart. `sets`, when given, gets
    each set's records as the run would make them from these replies (`Arm`, for sizing).
    `releases`: per label and task, where a released set is read (the rule's `release` param):
    it asks nothing and its records are exact."""
    out, built = [], {}
    for name in cfg["tasks"]:
        task = tasks.get(name, "study_b.tasks")
        items = variants.load_items(task, task_files[name], cfg["items"])
        for label in backends:
            variant, model = parse_label(label)
            sft_set = variants.sft_set_name(name, variant, model)
            recorder = _Recorder(sft_set, cache)
            source = []  # a perplexity split halves its source set
            if variant in PPL_SPLITS:
                of = cfg["ppl_split_of"]
                source = built.get(variants.sft_set_name(name, of, model if of in PER_MODEL
                                                         else None), [])
            # no target model is loaded: stand-in perplexities, and stand-in replies are not
            # judged (no request depends on either)
            records = variants.build(variants.Context(
                task, variant, cfg, items, recorder, scorer=lambda rows: [0.0] * len(rows),
                source_records=source, backends=backends[label], names=names[label],
                judge=False, model=model,
                release=(releases or {}).get(label, {}).get(name))).records
            built[sft_set] = records
            if sets is not None:
                sets[sft_set] = Arm(sft_set, records, FROM_CONFIG if recorder.stood_in else EXACT)
            out += recorder.planned
    return out


@dataclass
class Arm:
    """An SFT set as the run will make it, for sizing its training (restyle.sizing): its records,
    exact, or with every teacher reply not in the cache standing in at its max_tokens bound."""

    name: str
    records: list[SFTRecord]
    basis: str


def study_a_sets(cfg: dict, mmlu_train: str | Path) -> list[Arm]:
    """Study A's SFT sets (config `study_a`): the original items exact; each rule's and the
    plain teacher's with a reply of its max_tokens bound."""
    items = rewrite.load_items(mmlu_train, cfg["rewrite"]["items_per_set"])
    original = study_a_sft_set(ORIGINAL)
    count = len(cfg["rules"]["fixed"]) or cfg["rules"]["count"]
    written = [study_a_sft_set(f"rule-{i}") for i in range(1, count + 1)]
    if TEACHER_PLAIN in cfg["baselines"]:
        written.append(study_a_sft_set(TEACHER_PLAIN))
    reply = stand_in(cfg["rewrite"]["max_tokens"])  # the rewrite's bound, teacher_plain's too
    out = [Arm(original, rewrite.original_set(original, items), EXACT)] if (
        ORIGINAL in cfg["baselines"]) else []
    return out + [Arm(name, [replace(r, completion=f"{reply}\n\n{r.completion}")
                             for r in rewrite.original_set(name, items)], FROM_CONFIG)
                  for name in written]


def task_prompts(name: str, eval_cfg: dict, questions: str | Path, dev: str | Path | None,
                 kind: str = "positive") -> list[SFTRecord]:
    """Task `name`'s evaluated questions as evaluation prompts them (config eval.{name}),
    answered as control arm `kind` (restyle.controls): what a control trains on, and the
    prompts an evaluation job reads."""
    task = tasks.get(name)
    items = read_jsonl(questions, task.record.from_dict)
    if task.evaluation == tasks.LOGLIK:
        return controls.choice_set(task, kind, items, read_jsonl(dev, task.record.from_dict),
                                   eval_cfg["k_shot"])
    return controls.generation_set(task, kind, items, eval_cfg["instruction"])


def compute(targets: dict[str, dict], seeds: int, study_a_arms: list[Arm],
            study_b_arms: dict[str, Arm], control_kinds: list[str], eval_cfg: dict,
            eval_files: dict[str, dict], results: str | Path) -> list[dict]:
    """results/compute.csv (restyle.sizing): each target's training and evaluation jobs, then
    the TOTAL. `targets` maps a model to its `settings` (config train for it) and `source` (a
    folder with its config.json, or a hub id); `eval_files` each evaluated task to its questions
    and dev files (rules/common.smk task_eval_data); `results` holds finished train jobs whose
    throughput is measured."""
    made = {}

    def answered(task: str, kind: str = "positive") -> list[SFTRecord]:
        """The task's prompts answered as `kind`: the positive ones are also what evaluation
        reads, so each is made (and counted) once."""
        if (task, kind) not in made:
            made[task, kind] = task_prompts(task, eval_cfg[tasks.get(task).config_key],
                                            eval_files[task]["questions"],
                                            eval_files[task].get("dev"), kind)
        return made[task, kind]

    controlled = [t for t in eval_cfg["tasks"] if t in {STUDY_A_TASK, *{
        parse_set_name(n)[0] for n in study_b_arms}}]
    control_arms = [Arm(controls.sft_set_name(t, kind), answered(t, kind), EXACT)
                    for t in controlled for kind in control_kinds]
    rows, memo = [], {}
    for model, target in targets.items():
        settings = sizing.Settings.of(target["settings"])
        # (the task it was made from, arm) of each study arm this target trains
        studied = [*((STUDY_A_TASK, arm) for arm in study_a_arms),
                   *((parse_set_name(name)[0], arm) for name, arm in study_b_arms.items()
                     if parse_set_name(name)[2] in (None, model))]
        arms = [*(arm for _, arm in studied), *control_arms]
        evaluations = []
        for t in eval_cfg["tasks"]:
            cfg_t = eval_cfg[tasks.get(t).config_key]
            generated = (0 if tasks.get(t).evaluation == tasks.LOGLIK
                         else cfg_t["max_new_tokens"] * cfg_t.get("samples", 1))
            # a study arm on every task but the other folds of its own, a control on its own
            runs = (sum(tasks.evaluates(source, t) for source, _ in studied)
                    + sum(controls.parse_name(a.name)[0] == t for a in control_arms))
            evaluations.append(sizing.Evaluation(t, answered(t), generated, 1 + seeds * runs))
        try:
            flops = sizing.model_flops(target["source"], settings)
        except sizing.SizingError as e:
            log.warning("GPU-hours of %s unknown: %s", model, e)
            flops = None
        count, counter = _counter(target["source"], memo)
        rows += sizing.table(model, settings, seeds, arms, evaluations, flops,
                             sizing.rate(settings, results, model), count, counter)
    jobs = [r for r in rows if r["job"] in ("train", "evaluate")]
    return rows + ([sizing.total(sizing.TOTAL, jobs)] if len(targets) > 1 else [])


def _counter(source: str | Path, memo: dict):
    """(count, its name): the model's own tokenizer and chat template where the folder or hub
    id has one at hand, else tiktoken's o200k_base, an approximation. Targets that count alike
    count each text once (`memo`: the records live as long as it does, so their ids hold)."""
    from transformers import AutoTokenizer

    try:
        count = sizing.chat_counter(AutoTokenizer.from_pretrained(str(source)))
        label, key = "model tokenizer", str(source)
    except (OSError, ValueError):
        count = sizing.text_counter(teacher.tiktoken_encoding("gpt-4o"))
        label = key = "o200k_base (approx.)"

    def counted(prompt: list[dict], completion: str) -> int:
        text = (key, id(prompt), completion)
        if text not in memo:
            memo[text] = count(prompt, completion)
        return memo[text]
    return counted, label


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
    if (work / "results" / "train").is_dir():  # the run's train jobs: the throughput measured
        shared.append(work / "results" / "train")
    for entry in shared:
        link = scratch / entry.relative_to(work)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(entry)
    return [*args, "-d", str(scratch), "-f", "estimate"], scratch


if __name__ == "__main__":
    estimate_command, folder = scratch_command(sys.argv[1:])
    print(f"restyle: estimating in {folder}, apart from the run in this folder", flush=True)
    sys.exit(subprocess.run(estimate_command).returncode)
