"""The data stage (rules/data.smk): MMLU, GSM8K and Ruozhiba, each normalised to restyle's records.
`hub` is their shared Hugging Face loader; `ruozhiba_sample.jsonl` is the bundled Ruozhiba sample."""
