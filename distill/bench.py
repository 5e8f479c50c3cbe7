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

Timing uses :mod:`distill.latency` (sessions, inputs, percentiles), the code behind the
report's latency columns.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill import latency as lat
from distill.errors import ArtifactError, DistillError
from distill.export.bundle import FP32_REFERENCE, read_bundle
from distill.progress import track
from distill.tasks import TASKS
from distill.tasks.contract import BenchModule

DEFAULT_BATCH_SIZES = (1, 32)
DEFAULT_RUNS = 30
DEFAULT_WARMUP = 5
DEFAULT_ROUNDS = 10
DEFAULT_THREADS = 2
# Untimed sleep between two models' blocks (see interleaved_latency).
PAUSE_S = 0.02
# Untimed calls at the start of each model's block in every round: the first calls after
# another model ran refill the caches and wake the thread pool (measured on the quick
# start at batch 1: int8 student 1.26 / 0.85 ms for calls 1 / 2 of a block vs 0.72 ms
# from the third; PyTorch teacher 32 / 23 vs 14 ms), which a model serving alone never pays.
ROUND_WARMUP = 2

# Model keys, in table order.
TEACHER = "teacher_pytorch"
STUDENT = "student_pytorch"
ONNX_FP32 = "student_onnx_fp32"
ONNX_FP32_OPTIMIZED = "student_onnx_fp32_optimized"
DEPLOYED = "deployed"


# --------------------------------------------------------------------------- interleaved timing


def interleaved_latency(
    calls: Mapping[str, Callable[[], Any]],
    *,
    runs: int,
    warmup: int,
    rounds: int = DEFAULT_ROUNDS,
    pause_s: float = PAUSE_S,
    round_warmup: int = ROUND_WARMUP,
    desc: str = "timing",
) -> dict[str, lat.LatencyStats]:
    """Time several callables against each other, interleaved.

    Each callable is first called ``warmup`` times (untimed), then gets ``runs`` timed calls
    spread over ``rounds`` rounds; within a round every callable runs its share back to
    back, and the order of the callables rotates from round to round, so a burst of load
    from elsewhere hits them all. Between two callables the thread sleeps ``pause_s``
    (untimed) so that the previous runtime's spinning worker threads (OpenMP,
    onnxruntime's pool) are parked before the next one is timed, then calls it
    ``round_warmup`` times untimed, so that what is timed is the model in steady state, not
    the cost of switching models (:data:`ROUND_WARMUP`). The garbage collector is
    run before each round and paused during it. Percentiles come from
    :func:`distill.latency.summarize` over all the samples. Progress (``desc``) counts rounds,
    between which nothing is timed.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1 (got {runs})")
    if warmup < 0 or round_warmup < 0:
        raise ValueError(f"warmup and round_warmup must be >= 0 (got {warmup}, {round_warmup})")
    keys = list(calls)
    rounds = max(1, min(rounds, runs))
    shares = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    for key in keys:
        for _ in range(warmup):
            calls[key]()
    if rounds and pause_s > 0:
        time.sleep(pause_s)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    was_enabled = gc.isenabled()
    try:
        for r, share in track(enumerate(shares), len(shares), desc, unit="round"):
            gc.collect()
            gc.disable()
            shift = r % len(keys) if keys else 0
            for key in keys[shift:] + keys[:shift]:
                fn = calls[key]
                bucket = samples[key]
                if pause_s > 0:
                    time.sleep(pause_s)
                for _ in range(round_warmup):
                    fn()
                for _ in range(share):
                    start = time.perf_counter_ns()
                    fn()
                    bucket.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if was_enabled:
            gc.enable()
    return {key: lat.summarize(values, warmup=warmup) for key, values in samples.items()}


def onnx_call(session: Any, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """``session.run`` on the inputs the session declares (:func:`distill.latency.onnx_feed`)."""
    feed = lat.onnx_feed(session, inputs)
    return lambda: session.run(None, feed)


def torch_call(model: Any, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """``model(**inputs)`` under ``torch.inference_mode`` (threads are pinned by the caller)."""
    return lat.torch_call(model, inputs)


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
            return torch_call(self.handle, inputs)
        return onnx_call(self.handle, inputs)

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
            lat.ort_session(path, threads),
        )

    models.append(onnx_model(ONNX_FP32, "Student ONNX fp32 (plain export)", "fp32", fp32_path))
    # the bundle's graph optimization, replayed on its fp32 reference (default: level 2)
    recorded = manifest.get("optimization") or {}
    level = recorded.get("level") or 2
    cls_pruning = bool((recorded.get("cls_pruning") or {}).get("applied"))
    from distill.tasks.classification.export_steps import CLS_PRUNING

    try:
        optimized, settings = onnx_utils.optimize_graph(
            fp32_path,
            work / "optimized",
            level=level,
            rewrites=[CLS_PRUNING] if cls_pruning else [],
        )
    except NotImplementedError:
        optimized = None
    if optimized is not None:
        pruned = (settings.get("cls_pruning") or {}).get("applied")
        models.append(
            onnx_model(
                ONNX_FP32_OPTIMIZED,
                f"Student ONNX fp32 (ORT optimized, level {level}{', CLS-pruned' if pruned else ''})",
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
            calls = {}
            for model in models:
                inputs = lat.fixed_length_batch(
                    model.tokenizer, texts, batch_size=batch_size, max_length=length
                )
                calls[model.key] = model.call(inputs)
            stats = interleaved_latency(
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


def _p50(cell: dict[str, Any], key: str) -> float | None:
    stats = cell["latency"].get(key)
    return None if stats is None else stats["p50_ms"]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def compute_ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups (p50 quotients) per cell and the headline ratios at ``max_length``."""
    deployed_is_int8 = result.get("deployed_precision") == "int8"
    per_cell = []
    for cell in result["cells"]:
        per_cell.append(
            {
                "batch_size": cell["batch_size"],
                "sequence_length": cell["sequence_length"],
                "int8_vs_fp32_onnx": _ratio(_p50(cell, ONNX_FP32), _p50(cell, DEPLOYED))
                if deployed_is_int8
                else None,
                "int8_vs_fp32_onnx_optimized": _ratio(
                    _p50(cell, ONNX_FP32_OPTIMIZED), _p50(cell, DEPLOYED)
                )
                if deployed_is_int8
                else None,
                "deployed_vs_teacher": _ratio(_p50(cell, TEACHER), _p50(cell, DEPLOYED)),
                "deployed_vs_student_pytorch": _ratio(_p50(cell, STUDENT), _p50(cell, DEPLOYED)),
            }
        )
    sizes = {m["key"]: m["bytes"] for m in result["models"]}
    # the headline ratios are taken at max_length (else at the longest length measured)
    measured = {row["sequence_length"] for row in per_cell}
    max_length = result["typical_lengths"]["max_length"]
    if max_length not in measured and measured:
        max_length = max(measured)

    def at(batch: int, field: str) -> float | None:
        for row in per_cell:
            if row["batch_size"] == batch and row["sequence_length"] == max_length:
                return row[field]
        return None

    return {
        "per_cell": per_cell,
        "int8_vs_fp32_onnx_b1": at(1, "int8_vs_fp32_onnx"),
        "int8_vs_fp32_onnx_b32": at(32, "int8_vs_fp32_onnx"),
        "deployed_vs_teacher_b1": at(1, "deployed_vs_teacher"),
        "size_deployed_vs_fp32_onnx": _ratio(sizes.get(DEPLOYED), sizes.get(ONNX_FP32)),
        "at_sequence_length": max_length,
    }


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def render_markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown: one latency table, one ratio table, the headline ratios."""
    cells = result["cells"]
    hw = result["hardware"]
    typical = result["typical_lengths"]
    load = result.get("load_average") or {}
    lines = [
        f"## Latency: `{result['run']}`",
        "",
        f"{result['threads']} thread(s) per model (torch.set_num_threads / ORT intra-op), "
        f"CPU: {hw.get('cpu')} ({hw.get('available_cores')} cores available); "
        f"{result['runs']} timed calls per cell after {result['warmup']} warm-up calls "
        f"(excluded), models interleaved over {result['rounds']} rounds. Inputs padded to the "
        f"sequence length; typical test lengths: median {typical.get('median', 'n/a')}, "
        f"p95 {typical.get('p95', 'n/a')}, max_length {typical['max_length']} tokens. "
        f"1-minute load average before / after: {_fmt(load.get('before'))} / "
        f"{_fmt(load.get('after'))} (a load above the thread count means other processes "
        "competed for the cores; PyTorch's OpenMP threads suffer most).",
        "",
    ]
    header = ["model", "runtime", "size MB"] + [
        f"b{c['batch_size']} s{c['sequence_length']} p50 / p95 ms" for c in cells
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |")
    for model in result["models"]:
        row = [model["label"], model["runtime"], f"{model['bytes'] / 1e6:.2f}"]
        for cell in cells:
            stats = cell["latency"][model["key"]]
            row.append(f"{stats['p50_ms']:.2f} / {stats['p95_ms']:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    ratios = result["ratios"]
    lines += ["", "Speed-ups (quotients of p50s; > 1 means the deployed model is faster):", ""]
    header = ["ratio"] + [f"b{c['batch_size']} s{c['sequence_length']}" for c in cells]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for field, label in (
        ("int8_vs_fp32_onnx", "int8 vs fp32 ONNX (plain export)"),
        ("int8_vs_fp32_onnx_optimized", "int8 vs fp32 ONNX (ORT optimized)"),
        ("deployed_vs_student_pytorch", "deployed vs student PyTorch fp32"),
        ("deployed_vs_teacher", "deployed vs teacher PyTorch fp32"),
    ):
        row = [label] + [_fmt(r[field], ".2f", "x") for r in ratios["per_cell"]]
        lines.append("| " + " | ".join(row) + " |")
    length = ratios["at_sequence_length"]
    lines += [
        "",
        f"- int8 vs fp32 ONNX (plain export), batch 1, seq {length}: "
        f"{_fmt(ratios['int8_vs_fp32_onnx_b1'], '.2f', 'x')}",
        f"- int8 vs fp32 ONNX (plain export), batch 32, seq {length}: "
        f"{_fmt(ratios['int8_vs_fp32_onnx_b32'], '.2f', 'x')}",
        f"- deployed vs teacher (PyTorch fp32), batch 1, seq {length}: "
        f"{_fmt(ratios['deployed_vs_teacher_b1'], '.2f', 'x')}",
        f"- size, deployed / fp32 ONNX: {_fmt(ratios['size_deployed_vs_fp32_onnx'], '.3f', 'x')}",
        "",
    ]
    return "\n".join(lines)


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
