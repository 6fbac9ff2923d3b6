"""The local backend: a model of config `models` generating in this process with transformers
(teachers.{name}.model_key, which the rules turn into `manifest`, the manifest.json
restyle.models.prepare wrote). Settings: batch_size (prompts per generate() call; auto:
LOCAL_BATCH_SIZE off CUDA, on CUDA 512 halved until a batch fits, restyle.batching) and device."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from restyle.teacher.base import DEFAULT_MAX_TOKENS, Answer, Backend, Request, Run, TeacherConfig

LOCAL_BATCH_SIZE = 8  # what batch_size `auto` is off CUDA


def _local_batch(model, tokenizer, seqs: list[list[int]], prefix, params: dict,
                 seed: int) -> list[tuple[str, int, int]]:
    """(text, prompt tokens, completion tokens) for each prompt, generated together; `seqs` are
    the rendered prompts' tokens after the `prefix` (a batching.PrefixCache) they all share."""
    import torch

    from restyle.batching import left_pad

    ids, mask, _ = left_pad(seqs, tokenizer.pad_token_id)
    inputs = prefix.generation_inputs(ids.to(model.device), mask.to(model.device))
    temperature = params.get("temperature", 0.0)
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": params.get("top_p", 1.0)}
                if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None,
                                         "top_k": None})
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**inputs,
                             max_new_tokens=params.get("max_tokens", DEFAULT_MAX_TOKENS),
                             pad_token_id=tokenizer.pad_token_id, **sampling)
    new = out[:, inputs["input_ids"].shape[1]:]
    eos = model.generation_config.eos_token_id
    eos = torch.tensor(eos if isinstance(eos, list) else [eos if eos is not None
                                                           else tokenizer.eos_token_id])
    replies = []
    for row, seq in zip(new.cpu(), seqs):
        ends = torch.isin(row, eos).nonzero()
        n = int(ends[0]) + 1 if len(ends) else len(row)  # count the EOS, not the padding after it
        replies.append((tokenizer.decode(row[:n], skip_special_tokens=True).strip(),
                        len(prefix.ids) + len(seq), n))
    return replies


def _local(run: Run, todo: dict[str, Request]) -> dict[str, Answer | str]:
    from restyle import batching, models

    model, tokenizer = models.load(run.cfg.manifest, device=run.cfg.device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    limits = batching.resolve(model.device, rows=run.cfg.batch_size,
                              cpu_rows=LOCAL_BATCH_SIZE)
    out: dict[str, Answer | str] = {}
    groups: dict[str, list[str]] = {}  # one generate() call takes one set of parameters
    for key, req in todo.items():
        groups.setdefault(json.dumps(req.params, sort_keys=True), []).append(key)
    for keys in groups.values():
        params = todo[keys[0]].params
        # the rendered template already holds any BOS token; adding it again would double it
        rendered = [tokenizer.apply_chat_template(todo[k].messages, add_generation_prompt=True,
                                                  tokenize=False) for k in keys]
        tokens = dict(zip(keys, tokenizer(rendered, add_special_tokens=False)["input_ids"]))
        # a stage's prompts share their opening (system turn, the stage's instructions): once
        start = batching.shared_prefix(list(tokens.values()))
        prefix = batching.PrefixCache(model, tokens[keys[0]][:start])
        # greedy decoding gives the same reply again: re-ask only when sampling
        tries = run.cfg.schema_tries if params.get("temperature", 0.0) > 0 else 1
        pending = keys
        for attempt in range(tries):
            def answer(batch: list[int]) -> None:
                chunk = [pending[i] for i in batch]
                replies = _local_batch(model, tokenizer, [tokens[k][start:] for k in chunk],
                                       prefix, params, params.get("seed", 0) + attempt)
                for key, reply in zip(chunk, replies):
                    out[key] = run.accept(key, todo[key], *reply)
                    run.attempts += 1
                    if isinstance(out[key], Answer) or attempt + 1 == tries:
                        run.progress.update()

            # sorted by length for less padding, shortest first as before `auto` existed
            limits = batching.run_batches([len(tokens[k]) - start for k in pending], answer,
                                          limits, f"teacher {run.model}", shortest_first=True)
            run.batch_size = limits.rows
            pending = [k for k in pending if isinstance(out[k], str)]
            if not pending:
                break
        for key in pending:
            out[key] = f"no acceptable reply in {tries} tries, last: {out[key]}"
    return out


class Local(Backend):
    name = "local"
    needs_model = True

    def model_name(self, cfg: TeacherConfig) -> str:
        """Config `model` as a label, else the model's source (its manifest says)."""
        if cfg.model:
            return cfg.model
        from restyle import models

        return models.read_manifest(cfg.manifest)["source"]

    def use_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def generate(self, run: Run, todo: dict[str, Request]) -> dict[str, Answer | str]:
        return _local(run, todo)

    def token_counter(self, cfg: TeacherConfig) -> tuple[str, Callable[[Request], int]]:
        """"tokenizer": the model's own chat template and tokenizer."""
        count_messages = _token_counter(cfg.manifest)
        return "tokenizer", lambda request: count_messages(request.messages)


@functools.lru_cache(maxsize=None)  # one tokenizer load for every stage of an estimate
def _token_counter(manifest: str | Path) -> Callable[[list[dict]], int]:
    from transformers import AutoTokenizer

    from restyle import models

    tokenizer = AutoTokenizer.from_pretrained(models.read_manifest(manifest)["path"])
    return lambda messages: len(tokenizer(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False)["input_ids"])


BACKEND = Local()
