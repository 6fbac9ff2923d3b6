# Control arms (restyle.controls): the evaluated questions with their right answers (positive)
# or wrong ones (negative), trained, evaluated and reported like every other SFT set, in a
# section of the report of their own. Config `controls` ([positive, negative]; [] = none).
include: "controls_common.smk"


rule control_set:
    """One control SFT set from the evaluated items of one task (no teacher)."""
    input:
        unpack(control_set_inputs),
    output:
        "results/sft/control-{task}-{kind}.jsonl",
    params:
        code=lambda wc: code_version("controls.py", wc.task),
        # what shapes the prompts: MMLU's k solved examples, the generation task's instruction
        cfg=lambda wc: {
            k: v
            for k, v in config["eval"][restyle_tasks.get(wc.task).config_key].items()
            if k in ("k_shot", "instruction")
        },
    wildcard_constraints:
        task="|".join(restyle_tasks.NAMES),
        kind="|".join(restyle_controls.KINDS),
    log:
        "logs/controls/{task}-{kind}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/controls.py"
