"""The sections of the classification report, one module each; the report stage
(:mod:`distill.tasks.classification.stages.report`) puts them together."""
