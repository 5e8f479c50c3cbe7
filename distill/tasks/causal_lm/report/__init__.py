"""The sections of the causal-LM report, one module each; the report stage
(:mod:`distill.tasks.causal_lm.stages.report`) puts them together."""
