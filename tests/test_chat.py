import pytest
from transformers import AutoTokenizer

from restyle import models
from restyle.chat import IGNORE_INDEX, encode
from restyle.io import DataError
from restyle.records import SFTRecord


@pytest.fixture(scope="module")
def tokenizer(smollm2_manifest):
    return AutoTokenizer.from_pretrained(models.read_manifest(smollm2_manifest)["path"])


PROMPT = [{"role": "user", "content": "What is 2+3?"}]


def test_prompt_is_masked_and_response_is_trained(tokenizer):
    enc = encode(tokenizer, PROMPT, "2+3 = 5.\n#### 5")
    n_prompt = labels_start = enc.labels.index(next(t for t in enc.labels if t != IGNORE_INDEX))
    generation_prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True,
                                                      tokenize=True)["input_ids"]
    assert enc.input_ids[:n_prompt] == generation_prompt
    assert enc.labels[labels_start:] == enc.input_ids[labels_start:]
    assert tokenizer.decode(enc.input_ids[labels_start:]) == "2+3 = 5.\n#### 5<|im_end|>\n"
    assert enc.n_response_tokens == len(enc.input_ids) - n_prompt


def test_max_length_cuts_the_response_end(tokenizer):
    full = encode(tokenizer, PROMPT, "word " * 50)
    cut = encode(tokenizer, PROMPT, "word " * 50, max_length=len(full.input_ids) - 10)
    assert cut.input_ids == full.input_ids[:-10] and cut.labels == full.labels[:-10]


def test_sft_record_validation():
    good = {"id": "r/1", "source_id": "mmlu/x/test/1", "dataset": "original", "prompt": PROMPT,
            "completion": "The answer is (C).", "provenance": {}}
    assert SFTRecord.from_dict(good, "w").to_dict() == good
    with pytest.raises(DataError, match="f:3: prompt must end with a user message"):
        SFTRecord.from_dict({**good, "prompt": [*PROMPT, {"role": "assistant", "content": "x"}]}, "f:3")
    with pytest.raises(DataError, match=r"f:3: prompt\[0\] must be"):
        SFTRecord.from_dict({**good, "prompt": [{"role": "robot", "content": "x"}]}, "f:3")
    with pytest.raises(DataError, match="f:3: field 'completion' is empty"):
        SFTRecord.from_dict({**good, "completion": " "}, "f:3")
