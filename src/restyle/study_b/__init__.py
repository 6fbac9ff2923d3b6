"""Study B (rules/study_b.smk): response variants of the same training questions (`variants`) and
the target model's perplexity on them (`familiarity`)."""
