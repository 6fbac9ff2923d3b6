include: "data_common.smk"


# One data rule per task of the registry (restyle.tasks), each named prepare_{task}: it writes
# resources/data/{task}/{split}.jsonl for every split the task has.
for _task in restyle_tasks.REGISTRY.values():

    rule:
        name:
            f"prepare_{_task.name}"
        input:
            task_data_inputs(_task),
        output:
            **{split: _task.path(split) for split in _task.splits},
        params:
            code=code_version("data_task.py", _task.name),
            cfg=task_data_cfg(_task),
            task=_task.name,
            cache_dir="resources/packages",
        log:
            f"logs/prepare_{_task.name}.log",
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            "../envs/restyle.yaml"
        script:
            "../scripts/data_task.py"


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
