"""Sequence classification: its stages, training objective, runner (``distill predict``),
report rendering, comparison and model cards. Submodules are imported on demand: the
runner must stay usable without torch."""
