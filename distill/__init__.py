"""distill: knowledge-distillation compression pipeline for NLP models."""

__version__ = "0.1.0"
