rule prepare_model:
    """Make a model from config ready once: convert the bundled GGUF, check a local folder, or
    download a hub id; later rules depend on the manifest only."""
    output:
        "resources/models/{model}/manifest.json",
    params:
        code=code_version("models_prepare.py"),
        spec=lambda wc: config["models"][wc.model],
        cache_dir="resources/packages",
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "logs/benchmarks/prepare_model/{model}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/models_prepare.py"
