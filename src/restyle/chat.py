"""Rendering an SFT example with the model's own chat template, and which tokens are trained.

Training and the familiarity scorer both call `encode`, so the tokens a model is scored on
before fine-tuning are exactly the tokens it is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # label value that PyTorch's cross-entropy (and transformers) skips


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens, the token id on response tokens

    @property
    def n_response_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                        tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def encode(tokenizer, prompt: list[dict], completion: str, max_length: int | None = None) -> Encoded:
    """Token ids of prompt + response as the chat template renders them; labels mask the prompt.

    The prompt part is the template's rendering with the generation prompt (what the model sees
    at inference), the rest is the response and the template's end-of-turn tokens. Sequences
    over `max_length` lose tokens from the end of the response.
    """
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    full_ids = _ids(tokenizer, [*prompt, {"role": "assistant", "content": completion}],
                    add_generation_prompt=False)
    if full_ids[:len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template renders the prompt differently once a response "
                         "follows it, so the response tokens cannot be told apart")
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return Encoded(input_ids=full_ids, labels=labels)
