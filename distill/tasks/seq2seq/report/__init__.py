"""The sections of the seq2seq report, one module each: the models as decoders
(:mod:`.models`), their rows (:mod:`.rows`), speed (:mod:`.speed`), the verdict and warnings
(:mod:`.verdict`) and the examples side by side (:mod:`.samples`); the report stage
(:mod:`distill.tasks.seq2seq.stages.report`) puts them together."""
