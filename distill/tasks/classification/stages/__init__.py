"""One module per pipeline stage: data, teacher, student, export, report."""

# Saved static students load through AutoModelForSequenceClassification in every stage.
from distill.tasks.classification.static import model as _static_model  # noqa: F401
