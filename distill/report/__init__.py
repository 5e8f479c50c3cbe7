"""Report machinery shared by every task: the Jinja2 environment and filters (render.py), SVG
plot helpers (plots.py), the base template, and the report kit the report stages build on:
the stage body and what every report.json records alike (document.py), the head of a model
row (rows.py), ratios against the teacher (ratios.py), the training record (training.py),
paired significance tests (significance.py) and the interleaved latency run (timing.py).
Each task renders its own report (``distill/tasks/<task>/render.py``)."""
