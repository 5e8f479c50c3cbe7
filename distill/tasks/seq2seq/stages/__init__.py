"""The seq2seq task's stage functions (``task = "seq2seq"``): the pipeline's stages, one
``run(ctx, inputs, out, **tables)`` each (see :mod:`distill.tasks.contract`)."""
