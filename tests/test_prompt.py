"""One user turn per question: every study B set, every control arm and the evaluation ask a
question with the same text (Task.prompt), so the study arms are trained on the format they are
evaluated on, as the controls are (issue 31)."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config

from restyle import controls, evaluate, tasks
from restyle.checks import ConfigError, check
from restyle.evaluate import GenerationOptions
from restyle.records import CodeItem, ExplainedMCItem, MathItem
from restyle.study_b import variants

# one item per generation task, with the whitespace data files carry around a question
ITEMS = {
    "gsm8k": [MathItem(id=f"gsm8k/test/{i}", question=f"  Ann has {i} apples and buys 3. How "
                       f"many now?\n", answer=f"{i} + 3 = {i + 3}\n#### {i + 3}", final=str(i + 3))
              for i in range(2)],
    "math": [MathItem(id=f"math/test/{i}", question=f"Solve $2x = {i + 1}$.\n",
                      answer=f"$x=\\boxed{{\\frac{{{i + 1}}}{{2}}}}$", final=f"\\frac{{{i + 1}}}{{2}}")
             for i in range(2)],
    "ecqa": [ExplainedMCItem(id=f"ecqa/test/{i}", question=f"Where do you borrow book {i}? ",
                             choices=["bank", "library", "park", "bakery", "river"], answer=i,
                             explanation="Libraries lend books.") for i in range(2)],
    "mbpp": [CodeItem(id=f"mbpp/{i}", prompt=f"Write a function to add {i}.\nassert add(1) == "
                      f"{i + 1}\n", solution=f"def add(a):\n    return a + {i}\n",
                      test=f"assert add(1) == {i + 1}", entry_point="", source="test")
             for i in range(2)],
    "humaneval": [CodeItem(id=f"HumanEval/{i}", prompt=f'def f(x):\n    """Add {i}."""\n',
                           solution=f"def f(x):\n    return x + {i}\n",
                           test=f"def check(c):\n    assert c(1) == {i + 1}\n", entry_point="f",
                           source="test") for i in range(2)],
}
ITEMS["humaneval2"] = ITEMS["humaneval"]  # HumanEval's second fold: the same kind of item
GENERATION = sorted(n for n, t in tasks.REGISTRY.items() if t.evaluation == tasks.GENERATE)


def defaults() -> tuple[dict, dict]:
    """The schema's default study_b.instructions and eval sections: what a default run sends."""
    props = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]
    study_b = {k: v["default"] for k, v in
               props["study_b"]["properties"]["instructions"]["properties"].items()}
    return study_b, props["eval"]["properties"]


def test_every_generation_task_has_items_here():
    assert sorted(ITEMS) == GENERATION


@pytest.mark.parametrize("name", GENERATION)
def test_study_b_controls_and_evaluation_ask_the_same_user_turn(name, monkeypatch):
    task, items = tasks.get(name), ITEMS[name]
    study_b_instructions, eval_cfg = defaults()
    instruction = eval_cfg[task.config_key]["properties"]["instruction"]["default"]
    assert study_b_instructions[task.config_key] == instruction  # a default run trains what it evaluates

    ctx = variants.Context(task, "human", {"instructions": study_b_instructions,
                                           "filter_correct": False}, items, judge=False)
    sft = variants.build(ctx).records
    control = controls.generation_set(task, "positive", items, instruction)
    sent = []
    monkeypatch.setattr(evaluate, "generate_answers",
                        lambda model, tokenizer, prompts, options: (sent.extend(prompts) or
                                                                    [""] * len(prompts), None))
    evaluate.evaluate_generation(None, None, task, items, GenerationOptions(instruction))

    expected = [task.prompt(it, instruction) for it in items]
    assert [r.prompt for r in sft] == [r.prompt for r in control] == [
        [{"role": "user", "content": e}] for e in expected]
    assert sent == expected
    for it, text in zip(items, expected):
        # the question, a blank line, the instruction (as study B's release writes it)
        assert text == f"{task.question(it).strip()}\n\n{instruction}"
        assert not text.startswith((" ", "\n")) and not text.endswith((" ", "\n"))


def test_a_question_without_instruction_is_the_question_alone():
    item = ITEMS["gsm8k"][0]
    assert tasks.get("gsm8k").prompt(item, "  ") == "Ann has 0 apples and buys 3. How many now?"


def test_a_study_b_instruction_the_evaluation_does_not_ask_is_a_config_error():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    check(config, REPO / "config" / "schema.yaml")  # the default run agrees
    update_config(config, {"study_b": {"tasks": ["gsm8k", "mmlu"],
                                       "instructions": {"gsm8k": "Think.", "mmlu": "Pick one."}}})
    with pytest.raises(ConfigError) as error:
        check(config, REPO / "config" / "schema.yaml")
    assert "config study_b.instructions.gsm8k: 'Think.' differs from eval.gsm8k.instruction" \
        in str(error.value)
    assert "instructions.mmlu" not in str(error.value)  # scored by letters, asked no instruction
