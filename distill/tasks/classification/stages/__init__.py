"""One module per pipeline stage: data, teacher, student, export, report."""
