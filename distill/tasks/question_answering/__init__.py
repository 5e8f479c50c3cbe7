"""Extractive question answering: a span of the context answers each question."""
