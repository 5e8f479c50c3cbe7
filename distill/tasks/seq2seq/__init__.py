"""Sequence-to-sequence distillation (``task = "seq2seq"``): translation and summarization
students for T5, BART and Marian teachers, word- and sequence-level KD, served from an
encoder graph and a decoder graph with a KV cache."""
