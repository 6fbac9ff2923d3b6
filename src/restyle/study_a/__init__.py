"""Study A (rules/study_a.smk): rules extracted from Ruozhiba questions (`extraction`), MMLU
items rewritten by each rule into SFT sets, with the baselines and the quality gate (`rewrite`).
This package never imports its submodules, so they can import it."""
