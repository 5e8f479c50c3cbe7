"""The sections of the token-classification report, one module each; the report stage
(:mod:`distill.tasks.token_classification.stages.report`) puts them together."""
