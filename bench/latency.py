"""CPU latency of one run's models side by side, as a Markdown table.

    python bench/latency.py export/<name> [--runs N] [--threads 2] [--workdir DIR] [--json FILE]

Times the teacher and the student in PyTorch fp32, the student's fp32 ONNX file as optimum
exports it, the same graph after ONNX Runtime optimization, and the deployed model of the
bundle, interleaved, at batch sizes 1 and 32 and at the test texts' median, 95th-percentile
and maximum token lengths; prints p50/p95 per cell and the speed-up and size ratios.
The run's folders are found from the bundle's manifest (run name) under the workdir
(default: the folder holding ``export/``). See :mod:`distill.timing.bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout without installing distill
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.timing.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
