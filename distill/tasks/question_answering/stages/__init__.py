"""The pipeline stage bodies of question answering."""
