"""The sections of the question-answering report, one module each."""
