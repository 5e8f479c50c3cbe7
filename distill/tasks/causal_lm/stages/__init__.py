"""The causal-LM task's stage functions (``task = "causal-lm"``).

Same stages, order, manifests and hand-offs as classification (see
:mod:`distill.pipeline.stages`); what each computes is token-level: next-token fine-tuning,
top-k teacher logits per token, token-level distillation, ONNX with a KV cache, and
perplexity / tokens-per-second / sample continuations in the report.
"""
