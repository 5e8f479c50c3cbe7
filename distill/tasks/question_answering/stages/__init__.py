"""The question-answering report stage."""
