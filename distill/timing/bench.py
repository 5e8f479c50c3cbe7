"""Side-by-side CPU latency of one run's models (``bench/latency.py``, ``distill bench``).

For an exported bundle (``export/<name>/``) and the run folders next to it
(``runs/<name>/teacher/model``, ``runs/<name>/student/model``, ``runs/<name>/data/test.jsonl``)
this times, in one process and interleaved round by round so that machine noise lands on
every model alike:

- the teacher in PyTorch fp32,
- the student in PyTorch fp32,
- the student's fp32 ONNX file as the dynamo exporter writes it (``fp32/model_fp32.onnx``),
- the same file after ONNX Runtime graph optimization at the bundle's recorded level,
- the deployed model (``model.onnx``: the chosen int8 candidate, or fp32),

at batch sizes 1 and 32 and at sequence lengths typical of the data (the median and 95th
percentile token length of the test texts, plus ``max_length``). Every cell reports p50 and
p95 over ``runs`` timed calls (warm-up calls excluded) with a stated thread count, and the
ratios that matter are printed: int8 vs the default fp32 ONNX at batch 1 and 32, the
deployed model vs the teacher at batch 1, and the size ratio.

Timing uses :mod:`distill.timing.latency` (interleaving, inputs, percentiles), the code behind the
report's latency columns; the ratios and tables are :mod:`distill.timing.bench_table`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError, DistillError
from distill.export.bundle import FP32_REFERENCE, read_bundle
from distill.pipeline.progress import track
from distill.serving.session import onnx_session
from distill.tasks import TASKS
from distill.tasks.contract import BenchModule
from distill.timing import latency as lat
from distill.timing.bench_table import (
    DEPLOYED,
    ONNX_FP32,
    ONNX_FP32_OPTIMIZED,
    STUDENT,
    TEACHER,
    compute_ratios,
    render_markdown,
)

DEFAULT_BATCH_SIZES = (1, 32)
DEFAULT_RUNS = 30
DEFAULT_WARMUP = 5
DEFAULT_ROUNDS = lat.DEFAULT_ROUNDS
DEFAULT_THREADS = 2


# --------------------------------------------------------------------------- the run's models


@dataclass
class BenchModel:
    key: str
    label: str
    runtime: str  # "pytorch" | "onnxruntime"
    precision: str
    path: Path
    bytes: int
    tokenizer: Any
    handle: Any  # a torch module or an onnxruntime session

    def call(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        if self.runtime == "pytorch":
            return lat.torch_call(self.handle, inputs)
        return lat.onnx_call(self.handle, inputs)

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "runtime": self.runtime,
            "precision": self.precision,
            "path": str(self.path),
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class RunPaths:
    name: str
    bundle: Path
    workdir: Path
    manifest: dict[str, Any]
    task: BenchModule  # the task's bench module: load_model(folder), test_texts(data_dir)

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.name

    @property
    def teacher(self) -> Path:
        return self.run_dir / "teacher" / "model"

    @property
    def student_name(self) -> str:
        """``main`` (the recipe's [student]) or the variant the bundle was exported from."""
        return str(self.manifest.get("student") or "main")

    @property
    def student(self) -> Path:
        folder = self.run_dir / "student"
        if self.student_name != "main":
            folder = folder / "variants" / self.student_name
        return folder / "model"

    @property
    def export_stage(self) -> Path:
        folder = self.run_dir / "export"
        return folder if self.student_name == "main" else folder / "variants" / self.student_name

    @property
    def test_split(self) -> Path:
        return self.run_dir / "data" / "test.jsonl"


def locate(bundle: Path, workdir: Path | None = None) -> RunPaths:
    """The run behind a bundle (verified by :func:`distill.export.bundle.read_bundle`): its
    manifest's run name, and the workdir holding ``runs/``.

    ``bundle`` is ``<workdir>/export/<name>`` (published) or
    ``<workdir>/runs/<name>/export/bundle`` (the stage's own copy); without ``workdir`` it
    is inferred from that layout.
    """
    bundle = Path(bundle)
    # The one bundle reader: a damaged or edited bundle is refused before anything is timed.
    verified = read_bundle(bundle)
    if verified.task.bench is None:
        timed = ", ".join(repr(t.name) for t in TASKS.values() if t.bench is not None)
        raise ArtifactError(
            f"{bundle}: a {verified.task.name!r} bundle; distill bench times bundles of task "
            f"{timed} only (yet); its run's report times every model of the run instead"
        )
    verified.task.register_models()  # a task's own student types load like any other
    manifest = verified.manifest
    name = manifest.get("run") or bundle.name
    if workdir is None:
        resolved = bundle.resolve()
        parents = resolved.parents
        if resolved.name == "bundle" and len(parents) > 3 and parents[2].name == "runs":
            workdir = parents[3]
        elif resolved.parent.name == "export":
            workdir = resolved.parent.parent
        else:
            raise ArtifactError(
                f"{bundle}: cannot tell the workdir (expected <workdir>/export/<name>); "
                "pass --workdir"
            )
    paths = RunPaths(
        name=name,
        bundle=bundle,
        workdir=Path(workdir),
        manifest=manifest,
        task=verified.task.module(verified.task.bench),
    )
    for what, path in (
        ("teacher model", paths.teacher),
        ("student model", paths.student),
        ("test split", paths.test_split),
    ):
        if not path.exists():
            raise ArtifactError(f"{path}: the run's {what} is missing (run {name!r})")
    return paths


def _weights_bytes(model_dir: Path) -> int:
    files = list(model_dir.glob("*.safetensors")) or list(model_dir.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


def _load_torch(paths: RunPaths, model_dir: Path) -> tuple[Any, Any]:
    """A saved model of the run (loaded by its task) and its tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), paths.task.load_model(model_dir)


def load_models(paths: RunPaths, work: Path, threads: int) -> list[BenchModel]:
    """The five models of the comparison (the optimized fp32 is rebuilt under ``work``)."""
    from transformers import AutoTokenizer

    from distill.export import onnx as onnx_utils

    manifest = paths.manifest
    bundle = paths.bundle
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    deployed_path = bundle / manifest.get("model", "model.onnx")
    reference = manifest.get("fp32_reference")
    fp32_path = bundle / reference if reference else deployed_path
    kept = paths.export_stage / FP32_REFERENCE  # export.fp32_reference = false
    if not reference and manifest.get("precision") == "int8" and kept.is_file():
        fp32_path = kept
    models: list[BenchModel] = []
    for key, label, model_dir in (
        (TEACHER, "Teacher (PyTorch fp32)", paths.teacher),
        (STUDENT, "Student (PyTorch fp32)", paths.student),
    ):
        tok, model = _load_torch(paths, model_dir)
        models.append(
            BenchModel(
                key, label, "pytorch", "fp32", model_dir, _weights_bytes(model_dir), tok, model
            )
        )

    def onnx_model(key: str, label: str, precision: str, path: Path) -> BenchModel:
        return BenchModel(
            key,
            label,
            "onnxruntime",
            precision,
            path,
            path.stat().st_size,
            tokenizer,
            onnx_session(path, threads),
        )

    models.append(onnx_model(ONNX_FP32, "Student ONNX fp32 (plain export)", "fp32", fp32_path))
    # the bundle's graph optimization, replayed on its fp32 reference (default: level 2)
    recorded = manifest.get("optimization") or {}
    level = recorded.get("level") or 2
    # the task's own passes, as its export recorded them (optional bench hooks)
    options = getattr(paths.task, "optimization_options", lambda recorded: {})(recorded)
    try:
        optimized, settings = onnx_utils.optimize_graph(
            fp32_path, work / "optimized", level=level, **options
        )
    except NotImplementedError:
        optimized = None
    if optimized is not None:
        note = getattr(paths.task, "optimization_note", lambda settings: "")(settings)
        models.append(
            onnx_model(
                ONNX_FP32_OPTIMIZED,
                f"Student ONNX fp32 (ORT optimized, level {level}{note})",
                "fp32",
                optimized,
            )
        )
    precision = manifest.get("precision", "int8")
    chosen = manifest.get("chosen")
    label = f"Deployed: {chosen} ({precision})" if chosen else f"Deployed ({precision})"
    models.append(onnx_model(DEPLOYED, label, precision, deployed_path))
    return models


# --------------------------------------------------------------------------- the benchmark


def typical_lengths(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, int]:
    """Median and 95th-percentile token length of ``texts`` (rounded up), and ``max_length``."""
    from distill.export.onnx import token_lengths

    lengths = token_lengths(tokenizer, texts, max_length=max_length)
    if lengths.size == 0:
        return {"max_length": max_length}
    return {
        "median": math.ceil(float(np.median(lengths))),
        "p95": math.ceil(float(np.percentile(lengths, 95))),
        "max_length": int(max_length),
    }


def run_bench(
    bundle: Path,
    *,
    workdir: Path | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
    rounds: int = DEFAULT_ROUNDS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    sequence_lengths: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Time the run's models at every (batch size, sequence length); returns a JSON-able dict."""
    paths = locate(bundle, workdir)
    max_length = int(paths.manifest.get("max_length") or 128)
    texts = paths.task.test_texts(paths.test_split.parent)
    if not texts:
        raise ArtifactError(f"{paths.test_split}: no test texts to build inputs from")
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp, lat.torch_threads(threads):
        models = load_models(paths, Path(tmp), threads)
        typical = typical_lengths(models[-1].tokenizer, texts, max_length)
        lengths = sorted(set(sequence_lengths or typical.values()))
        cells = []
        grid = [(batch_size, length) for batch_size in batch_sizes for length in lengths]
        for batch_size, length in track(grid, desc="bench", unit="cell"):
            batch = lat.text_batch(texts, batch_size=batch_size, max_length=length)
            calls = {model.key: model.call(batch(model.tokenizer)) for model in models}
            stats = lat.interleaved_latency(
                calls,
                runs=runs,
                warmup=warmup,
                rounds=rounds,
                desc=f"bench: batch {batch_size}, length {length}",
            )
            cells.append(
                {
                    "batch_size": batch_size,
                    "sequence_length": length,
                    "latency": {
                        key: s.with_setup(
                            threads=threads, batch_size=batch_size, sequence_length=length
                        ).to_dict()
                        for key, s in stats.items()
                    },
                }
            )
        described = [m.describe() for m in models]
    result = {
        "run": paths.name,
        "bundle": str(paths.bundle),
        "chosen": paths.manifest.get("chosen"),
        "deployed_precision": paths.manifest.get("precision"),
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "rounds": max(1, min(rounds, runs)),
        "hardware": lat.hardware_info(),
        "load_average": {"before": load_before, "after": _load_average()},
        "typical_lengths": typical,
        "models": described,
        "cells": cells,
    }
    result["ratios"] = compute_ratios(result)
    return result


def _load_average() -> float | None:
    """The 1-minute load average (other processes competing for the cores), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The bench's arguments (for ``bench/latency.py`` and a ``distill bench`` subcommand)."""
    parser.add_argument("bundle", type=Path, help="the exported bundle, e.g. export/<name>")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder holding runs/ (default: inferred)"
    )
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed calls per cell")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="CPU threads")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaving rounds")
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), help="e.g. 1,32"
    )
    parser.add_argument(
        "--seq-lengths", default=None, help="e.g. 16,64 (default: median, p95, max_length)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(
        argparse.ArgumentParser(
            prog="bench/latency.py",
            description="CPU latency of a run's teacher, student and exported models.",
        )
    )


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DistillError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise DistillError(f"{flag} {text!r}: expected positive integers")
    return values


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bench for parsed :func:`add_arguments` arguments; prints the Markdown table.
    Returns the exit status (2 with a one-line message for a user error)."""
    try:
        if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.rounds < 1:
            raise DistillError("--runs, --threads and --rounds must be >= 1, --warmup >= 0")
        result = run_bench(
            args.bundle,
            workdir=args.workdir,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            rounds=args.rounds,
            batch_sizes=_int_list(args.batch_sizes, "--batch-sizes"),
            sequence_lengths=_int_list(args.seq_lengths, "--seq-lengths")
            if args.seq_lengths
            else None,
        )
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(render_markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))
