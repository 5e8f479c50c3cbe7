"""Token classification's stage bodies: one module per pipeline stage."""
