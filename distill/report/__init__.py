"""Report machinery shared by every task: the Jinja2 environment and filters, SVG plot
helpers, the base template, and what report stages read alike. Each task renders its own
report (``distill/tasks/<task>/render.py``)."""
