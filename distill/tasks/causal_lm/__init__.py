"""Distillation of causal language models: token-level losses, model preparation, ONNX
export with a KV cache, and torch-free generation.

Submodules are imported on demand: :mod:`distill.tasks.causal_lm.generate` must stay usable
without torch or transformers, so this package imports nothing itself.
"""
