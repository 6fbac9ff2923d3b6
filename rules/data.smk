from restyle.data.gsm8k import SPLITS as GSM8K_SPLITS
from restyle.data.mmlu import ROLES as MMLU_ROLES


rule prepare_mmlu:
    """MMLU from the configured source, normalised and cut into train/dev/test roles."""
    output:
        **{role: f"resources/data/mmlu/{role}.jsonl" for role in MMLU_ROLES},
    params:
        code=code_version("data_mmlu.py"),
        cfg=config["data"]["mmlu"],
        cache_dir="resources/packages",
    log:
        "logs/prepare_mmlu.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/data_mmlu.py"


rule prepare_ruozhiba:
    """Ruozhiba questions for study A's teacher."""
    output:
        "resources/data/ruozhiba.jsonl",
    params:
        code=code_version("data_ruozhiba.py"),
        cfg=config["data"]["ruozhiba"],
    log:
        "logs/prepare_ruozhiba.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/data_ruozhiba.py"


rule prepare_gsm8k:
    """GSM8K-format word problems for study B's generation task."""
    output:
        **{split: f"resources/data/gsm8k/{split}.jsonl" for split in GSM8K_SPLITS},
    params:
        code=code_version("data_gsm8k.py"),
        cfg=config["data"]["gsm8k"],
    log:
        "logs/prepare_gsm8k.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/data_gsm8k.py"
