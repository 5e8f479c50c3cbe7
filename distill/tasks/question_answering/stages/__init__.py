"""Question answering's stage bodies: one module per pipeline stage."""
