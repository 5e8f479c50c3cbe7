"""Stage `report` for task ``causal-lm``: teacher, distilled student, its no-KD twin and the
student's ONNX exports, side by side.

Writes ``report.json`` first (the source of truth, ``task = "causal-lm"``) and then renders
``report.md``, ``report.html`` and ``perplexity_vs_size.svg`` from that JSON alone
(:mod:`distill.tasks.causal_lm.render`), so a report can be re-rendered without rerunning
anything (:func:`distill.report.reports.rerender`).

One row per model: the teacher and the distilled student in PyTorch fp32, the student
trained without distillation when the student stage made one, the student's fp32 and int8
ONNX files, and the teacher's own fp32 and int8 ONNX files (``export.teacher_baseline``:
the same KV-cache export and quantization), so that the deployed student's "smaller" and
"faster" (``headline``) are stated against the PyTorch teacher and the teacher's int8 ONNX. Test perplexities are copied from the upstream manifests (the numbers the
stages measured on the models they shipped); sizes are the weight files on disk; generation
speed is measured here, on this machine: greedy decoding of ``max_new_tokens`` tokens at
batch 1 with a pinned thread count, EOS ignored so every model generates the same number of
tokens, the models interleaved run by run. ``samples`` held-out prompts (the first half of
a test text) are continued greedily by each model and shown side by side.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifacts import (
    RunContext,
    library_versions,
    onnx_files,
    read_manifest,
    relative_path,
    upstream_manifests,
    weight_files,
    write_json_atomic,
)
from distill.config import ReportConfig, task_dump
from distill.dataset_files import SPLITS, read_split
from distill.errors import ArtifactError
from distill.latency import hardware_info, summarize, torch_threads
from distill.progress import track
from distill.report.training import training_summary
from distill.tasks.causal_lm.int8 import describe_quantization
from distill.tasks.causal_lm.render import SCHEMA_VERSION, TASK, load_report, write_reports

log = logging.getLogger("distill")

UPSTREAM = ("data", "teacher", "student", "export")
# Prompts for the speed runs: a few, cycled run by run, so no single prompt decides.
SPEED_PROMPTS = 3
# A run generates max_new_tokens tokens (seconds for a real teacher, not milliseconds as a
# classification forward pass), so the recipe's latency_runs / latency_warmup are capped.
MAX_SPEED_RUNS = 20
MAX_SPEED_WARMUP = 2
# Prompts are the first half of a test text's words, at most this many words.
MAX_PROMPT_WORDS = 48
MAX_TEXT_CHARS = 500
GENERATION_SETTINGS = ("divergence", "jsd_beta", "teacher_outputs", "top_k", "samples_per_token")
# Shown among the settings when a recipe changes them.
SELECTION_DEFAULTS = {"layer_selection": "even", "mlp_keep": 1.0, "heads_keep": 1.0}


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, report: ReportConfig
) -> dict[str, Any]:
    """Build ``report.json`` from the upstream folders, then render Markdown and HTML from it."""
    document = build_report(ctx, inputs, report)
    write_json_atomic(out / "report.json", document)
    # Render from the file just written, not the in-memory dict: the JSON is the source of truth.
    write_reports(load_report(out / "report.json"), out)
    return summary_metrics(document)


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest."""
    rows = {
        row["key"]: {
            "perplexity": row.get("perplexity"),
            "tokens_per_s": (row.get("speed") or {}).get("tokens_per_s"),
            "bytes": row.get("bytes"),
            "size_ratio": row.get("size_ratio"),
            "speedup": row.get("speedup"),
        }
        for row in document["rows"]
    }
    return {
        "rows": rows,
        "deployed": next((r["key"] for r in document["rows"] if r.get("deployed")), None),
        "perplexity_gain_over_no_kd": document["distillation"]["perplexity_gain_over_no_kd"],
    }


# --------------------------------------------------------------------------- building the JSON


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    started = time.perf_counter()
    manifests = upstream_manifests(inputs, UPSTREAM)
    data_dir, teacher_dir, student_dir, export_dir = (inputs[name] for name in UPSTREAM)
    teacher_metrics = manifests["teacher"].get("metrics") or {}
    student_metrics = manifests["student"].get("metrics") or {}
    export_metrics = manifests["export"].get("metrics") or {}

    test = read_split(data_dir, "test")
    texts = [(i, t) for i, t in zip(test.ids, test.texts, strict=True) if t.split()]
    if not texts:
        raise ArtifactError(f"{data_dir / 'test.jsonl'}: the test split has no text to prompt with")
    bundle = export_dir / "bundle"
    tokenizer = _tokenizer(bundle, student_dir / "model")
    notes: list[str] = []
    hardware = hardware_info()
    threads = config.latency_threads
    runs, warmup = _speed_budget(config, hardware, notes)
    deployed, fp32_path, int8_path = _deployed_files(bundle, export_metrics, notes)

    # The models ------------------------------------------------------------------------
    teacher_model = _load_torch(teacher_dir / "model")
    student_model = _load_torch(student_dir / "model")
    onnx_models = {"student_onnx_fp32": _load_onnx(bundle, fp32_path, threads)}
    if int8_path is not None:
        onnx_models["student_onnx_int8"] = _load_onnx(bundle, int8_path, threads)
    teacher_onnx = _teacher_onnx(export_dir, export_metrics, notes)
    for key, (_, path) in teacher_onnx.items():
        onnx_models[key] = _load_onnx(export_dir / "teacher", path, threads)
    no_kd_dir = student_dir / "baseline" / "model"
    has_no_kd = no_kd_dir.is_dir()
    no_kd_model = _load_torch(no_kd_dir) if has_no_kd else None

    rows = [
        _torch_row(
            "teacher",
            "Teacher",
            teacher_dir / "model",
            teacher_model,
            teacher_metrics,
        ),
        _torch_row(
            "student", "Student (distilled)", student_dir / "model", student_model, student_metrics
        ),
    ]
    if has_no_kd:
        no_kd_metrics = student_metrics.get("baseline") or {}
        rows.append(
            _torch_row("student_no_kd", "Student without KD", no_kd_dir, no_kd_model, no_kd_metrics)
        )
        # Same architecture as the distilled student: timing it would repeat that row.
        notes.append(
            "Student without KD: same architecture as the distilled student; its speed is not "
            "measured again."
        )
    rows += _student_onnx_rows(
        rows[1], bundle, export_dir, export_metrics, fp32_path=fp32_path, int8_path=int8_path
    )
    rows += _teacher_onnx_rows(rows[0], teacher_onnx, export_dir, export_metrics)

    # Prompts, timing and samples ---------------------------------------------------------
    prompts = [(example_id, *split_prompt(text)) for example_id, text in texts]
    speed_ids = [list(tokenizer.encode(p).ids) for _, p, _ in prompts[:SPEED_PROMPTS]]
    n_new = config.max_new_tokens
    callers: dict[str, Callable[[list[int]], int]] = {
        "teacher": _torch_caller(teacher_model, n_new),
        "student": _torch_caller(student_model, n_new),
        **{key: _onnx_caller(lm, n_new) for key, lm in onnx_models.items()},
    }
    with torch_threads(threads):
        log.info("report: timing greedy generation of %d tokens (%d runs)", n_new, runs)
        speeds = time_generation(callers, speed_ids, runs=runs, warmup=warmup)
        deployed_key = "student_onnx_int8" if int8_path is not None else "student_onnx_fp32"
        chosen = prompts[: config.samples]
        continuers: list[tuple[str, str, Callable[[list[int]], tuple[list[int], str]]]] = [
            ("teacher", "Teacher", _torch_continuer(teacher_model, n_new)),
            ("student", "Student (distilled)", _torch_continuer(student_model, n_new)),
        ]
        if no_kd_model is not None:
            continuers.append(
                ("student_no_kd", "Student without KD", _torch_continuer(no_kd_model, n_new))
            )
        continuers.append(
            (
                deployed_key,
                f"Student ONNX {deployed} (deployed)",
                _onnx_continuer(onnx_models[deployed_key], n_new),
            )
        )
        samples = continue_prompts(chosen, tokenizer, continuers)
    for row in rows:
        row["speed"] = speeds.get(row["key"])
    del teacher_model, student_model, no_kd_model, onnx_models, callers, continuers
    gc.collect()
    _add_ratios(rows)
    by_key = {row["key"]: row for row in rows}
    headline = {
        reference: _versus(by_key[deployed_key], by_key[reference])
        for reference in ("teacher", "teacher_onnx_int8", "teacher_onnx_fp32")
        if reference in by_key
    }

    distillation = _distillation(manifests, student_metrics, teacher_metrics, by_key)
    if any(row["perplexity"] is None for row in rows):
        absent = [row["name"] for row in rows if row["perplexity"] is None]
        notes.append(f"No test perplexity in the upstream manifests for: {', '.join(absent)}.")

    wall_times = _wall_times(manifests, inputs, started)

    return {
        "schema_version": SCHEMA_VERSION,
        "task": TASK,
        "run": ctx.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {
            "splits": {
                name: {"examples": len(read_split(data_dir, name))}
                for name in SPLITS
                if (data_dir / f"{name}.jsonl").is_file()
            },
            "test_tokens_scored": (teacher_metrics.get("test") or {}).get("tokens"),
        },
        "rows": rows,
        "deployed": deployed_key,
        # The deployed student against the PyTorch teacher and the teacher's own ONNX files.
        "headline": headline,
        "export": {
            "deployed": deployed,
            "quantization": export_metrics.get("quantization"),
            "quantization_pass": describe_quantization(export_metrics.get("quantization")),
            "fp32_perplexity": _number(export_metrics.get("fp32_perplexity")),
            "int8_perplexity": _number(export_metrics.get("int8_perplexity")),
            "parity_max_abs_diff": _number(export_metrics.get("parity_max_abs_diff")),
            "fp32_bytes": export_metrics.get("fp32_bytes"),
            "int8_bytes": export_metrics.get("int8_bytes"),
        },
        "speed_setup": _speed_setup(threads, n_new, runs, warmup, speed_ids),
        "samples": samples,
        "samples_setup": {
            "max_new_tokens": n_new,
            "decoding": "greedy; stops at the model's EOS token",
            "prompt": f"the first half of a test text's words (at most {MAX_PROMPT_WORDS})",
        },
        "distillation": distillation,
        "training": {
            "teacher": _training(manifests["teacher"]),
            "student": _training(manifests["student"]),
        },
        "recipe": _recipe(manifests, config),
        "wall_time_s": wall_times,
        "versions": library_versions(),
        "hardware": hardware,
        "notes": notes,
    }


def _speed_budget(
    config: ReportConfig, hardware: dict[str, Any], notes: list[str]
) -> tuple[int, int]:
    """Timed and warm-up generation runs per model (capped: each generates max_new_tokens);
    what limits them is said in ``notes``."""
    threads = config.latency_threads
    if hardware.get("available_cores") and threads > hardware["available_cores"]:
        notes.append(
            f"latency_threads = {threads} exceeds the {hardware['available_cores']} cores "
            "available to this process: tokens/s are pessimistic."
        )
    runs = min(config.latency_runs, MAX_SPEED_RUNS)
    warmup = min(config.latency_warmup, MAX_SPEED_WARMUP)
    if runs < config.latency_runs or warmup < config.latency_warmup:
        notes.append(
            f"Generation speed: {runs} timed runs after {warmup} warm-up runs per model "
            f"(latency_runs = {config.latency_runs}, latency_warmup = {config.latency_warmup} "
            f"capped at {MAX_SPEED_RUNS} and {MAX_SPEED_WARMUP}: each run generates "
            f"{config.max_new_tokens} tokens)."
        )
    return runs, warmup


def _deployed_files(
    bundle: Path, export_metrics: dict[str, Any], notes: list[str]
) -> tuple[str, Path, Path | None]:
    """Which ONNX file is which (the bundle's model.onnx is what ships): the deployed
    precision, the fp32 file and the int8 file (None when fp32 is deployed)."""
    deployed = export_metrics.get("deployed")
    if deployed not in ("int8", "fp32"):
        deployed = "int8" if (bundle / "fp32" / "model.onnx").is_file() else "fp32"
    fp32_path = bundle / "fp32" / "model.onnx" if deployed == "int8" else bundle / "model.onnx"
    int8_path = bundle / "model.onnx" if deployed == "int8" else None
    if deployed == "fp32":
        if export_metrics.get("int8_perplexity") is not None:
            notes.append(
                "The int8 model was measured (test perplexity "
                f"{export_metrics['int8_perplexity']:.4g}) but the fp32 model was deployed."
            )
        else:
            notes.append("export.quantization = none: there is no int8 model to report.")
    return deployed, fp32_path, int8_path


def _onnx_row(
    key: str, name: str, precision: str, path: Path, pytorch_row: dict[str, Any], export_dir: Path
) -> dict[str, Any]:
    """An ONNX model's row: sizes of its files, the PyTorch row's parameters; no speed yet."""
    files = onnx_files(path)
    return {
        "key": key,
        "name": name,
        "runtime": "onnxruntime",
        "precision": precision,
        "deployed": False,
        "parameters": pytorch_row["parameters"],
        "architecture": pytorch_row["architecture"],
        "bytes": sum(f.stat().st_size for f in files),
        "weight_files": [relative_path(f, export_dir) for f in files],
        "perplexity": None,
        "validation_perplexity": None,
        "test_tokens": None,
        "speed": None,
    }


def _student_onnx_rows(
    student_row: dict[str, Any],
    bundle: Path,
    export_dir: Path,
    export_metrics: dict[str, Any],
    *,
    fp32_path: Path,
    int8_path: Path | None,
) -> list[dict[str, Any]]:
    """The student's fp32 and (when built) int8 ONNX rows, the deployed one marked."""
    models = [("student_onnx_fp32", "Student ONNX fp32", "fp32", fp32_path, "fp32_perplexity")]
    if int8_path is not None:
        models.append(
            ("student_onnx_int8", "Student ONNX int8", "int8", int8_path, "int8_perplexity")
        )
    rows = []
    for key, name, precision, path, metric in models:
        row = _onnx_row(key, name, precision, path, student_row, export_dir)
        row["deployed"] = path == bundle / "model.onnx"
        row["perplexity"] = _number(export_metrics.get(metric))
        rows.append(row)
    return rows


def _teacher_onnx_rows(
    teacher_row: dict[str, Any],
    teacher_onnx: dict[str, tuple[str, Path]],
    export_dir: Path,
    export_metrics: dict[str, Any],
) -> list[dict[str, Any]]:
    """The teacher's own ONNX rows (export.teacher_baseline), never deployed."""
    baseline = export_metrics.get("teacher_baseline") or {}
    rows = []
    for key, (precision, path) in teacher_onnx.items():
        row = _onnx_row(key, f"Teacher ONNX {precision}", precision, path, teacher_row, export_dir)
        row["perplexity"] = _number(baseline.get(f"{precision}_perplexity"))
        row["test_tokens"] = baseline.get("test_tokens")
        rows.append(row)
    return rows


def _distillation(
    manifests: dict[str, dict[str, Any]],
    student_metrics: dict[str, Any],
    teacher_metrics: dict[str, Any],
    by_key: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The student's settings that matter, how it was built and selected, and what the
    teacher's distribution bought over the no-KD twin."""
    student_cfg = (manifests["student"].get("config") or {}).get("student") or {}
    settings = {
        key: student_cfg.get(key)
        for key in ("init", "num_layers", "layers", "temperature", "alpha")
        if student_cfg.get(key) is not None
    }
    settings.update(
        {
            key: student_cfg[key]
            for key, default in SELECTION_DEFAULTS.items()
            if student_cfg.get(key, default) != default
        }
    )
    for key in GENERATION_SETTINGS:
        value = student_metrics.get(key, student_cfg.get(key))
        if value is None or (key == "jsd_beta" and settings.get("divergence") != "jsd"):
            continue
        if key == "samples_per_token" and settings.get("teacher_outputs") != "sampled":
            continue
        settings[key] = value
    settings.update(on_policy_settings(student_metrics.get("on_policy")))
    gain = None
    if "student_no_kd" in by_key:
        no_kd_ppl, kd_ppl = by_key["student_no_kd"]["perplexity"], by_key["student"]["perplexity"]
        if no_kd_ppl is not None and kd_ppl is not None:
            gain = no_kd_ppl - kd_ppl
    distillation = {
        "settings": settings,
        "built": student_metrics.get("built"),
        "selection": student_selection(student_metrics, student_cfg, teacher_metrics),
        # What the teacher's distribution bought: positive when the distilled student is better.
        "perplexity_gain_over_no_kd": gain,
    }
    return distillation


def _wall_times(
    manifests: dict[str, dict[str, Any]], inputs: dict[str, Path], started: float
) -> dict[str, Any]:
    """Each stage's wall seconds in pipeline order, the report's own included."""
    wall_times = {name: manifests[name].get("wall_time_s") for name in UPSTREAM}
    if "labels" in inputs:  # the teacher's cached logits, between teacher and student
        labels_manifest = read_manifest(inputs["labels"]) or {}
        wall_times = {
            "data": wall_times["data"],
            "teacher": wall_times["teacher"],
            "labels": labels_manifest.get("wall_time_s"),
            "student": wall_times["student"],
            "export": wall_times["export"],
        }
    wall_times["report"] = round(time.perf_counter() - started, 3)
    return wall_times


def _speed_setup(
    threads: int, n_new: int, runs: int, warmup: int, speed_ids: list[list[int]]
) -> dict[str, Any]:
    """How generation speed was measured, for the report to state beside the numbers."""
    return {
        "threads": threads,
        "batch_size": 1,
        "max_new_tokens": n_new,
        "runs": runs,
        "warmup": warmup,
        "prompts": len(speed_ids),
        "prompt_tokens": [len(ids) for ids in speed_ids],
        "inputs": (
            f"the first {len(speed_ids)} test prompt(s) (first half of the text, at most "
            f"{MAX_PROMPT_WORDS} words), cycled run by run; greedy, KV cache, batch 1, "
            f"EOS ignored so that every run generates {n_new} tokens; tokens/s = new "
            "tokens / wall time of the generate call (prompt included), median of the runs; "
            "the models are interleaved run by run"
        ),
        "torch": (
            "torch.set_num_threads(threads); model.generate(do_sample=False, use_cache=True, "
            "min_new_tokens = max_new_tokens)"
        ),
        "onnxruntime": (
            "distill.tasks.causal_lm.generate (onnxruntime, numpy; intra_op_num_threads = threads, "
            "inter_op_num_threads = 1), eos_token_ids = ()"
        ),
    }


def on_policy_settings(record: dict[str, Any] | None) -> dict[str, Any]:
    """The on-policy lines of the settings table (none when it was off): lambda, the
    divergence, how many training batches were the student's samples, and their length."""
    if not record:
        return {}
    batches = record["batches"] + record["off_policy_batches"]
    settings = {
        "on_policy_fraction": record["fraction"],
        "on_policy_divergence": record["divergence"],
        "on_policy_batches": f"{record['batches']} of {batches}",
        "on_policy_mean_sampled_tokens": record["mean_sampled_tokens"],
    }
    if "jsd_beta" in record:
        settings["on_policy_jsd_beta"] = record["jsd_beta"]
    return settings


def student_selection(
    student_metrics: dict[str, Any], student_cfg: dict[str, Any], teacher_metrics: dict[str, Any]
) -> dict[str, Any] | None:
    """How the student was cut from the teacher (layers kept, the scores behind a measured
    choice, neurons and heads kept) and its perplexity before and after training; None for
    a student stage that recorded neither."""
    built = student_metrics.get("built") or {}
    before = student_metrics.get("before_training")
    if before is None and "teacher_layers" not in built:
        return None
    layers = built.get("teacher_layers")
    selection = built.get("layer_selection")
    if selection is None and layers is not None:
        selection = "explicit" if student_cfg.get("layers") else "even"
    heads = built.get("heads")

    def ppl(metrics: dict[str, Any] | None, split: str) -> float | None:
        return _number(((metrics or {}).get(split) or {}).get("perplexity"))

    return {
        "layer_selection": selection,
        "teacher_layers": layers,
        "calibration_texts": built.get("calibration_texts"),
        "calibration_tokens": built.get(
            "calibration_tokens", built.get("width_calibration_tokens")
        ),
        "block_influence": built.get("block_influence"),
        "dropped_block": built.get("dropped_block"),
        "mlp": built.get("mlp"),
        "heads": None if heads is None else {k: v for k, v in heads.items() if k != "scores"},
        "perplexity": {
            split: {
                "before_training": ppl(before, split),
                "after_training": ppl(student_metrics, split),
                "teacher": ppl(teacher_metrics, split),
            }
            for split in ("validation", "test")
        },
    }


def split_prompt(text: str) -> tuple[str, str]:
    """(prompt, rest): the first half of the words (at least one, at most
    :data:`MAX_PROMPT_WORDS`) and what the text goes on with, cut to :data:`MAX_TEXT_CHARS`."""
    words = text.split()
    keep = min(max(1, len(words) // 2), MAX_PROMPT_WORDS)
    rest = " ".join(words[keep:])
    if len(rest) > MAX_TEXT_CHARS:
        rest = rest[:MAX_TEXT_CHARS] + "…"
    return " ".join(words[:keep]), rest


def time_generation(
    callers: dict[str, Callable[[list[int]], int]],
    prompts: Sequence[list[int]],
    *,
    runs: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Tokens/s of each caller (``ids -> new tokens generated``), interleaved: run ``r`` feeds
    prompt ``r mod len(prompts)`` to every model, the order rotated each run so that no model
    always goes first (or always follows the same neighbour)."""
    if not prompts:
        raise ValueError("no prompts to time generation with")
    keys = list(callers)
    for i in range(warmup):
        for key in keys:
            callers[key](prompts[i % len(prompts)])
    seconds: dict[str, list[float]] = {key: [] for key in keys}
    tokens: dict[str, list[int]] = {key: [] for key in keys}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # a collection of someone else's garbage must not land in one run
    try:
        for r in track(range(runs), desc="report: timing generation", unit="run"):
            ids = prompts[r % len(prompts)]
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:
                start = time.perf_counter_ns()
                count = callers[key](ids)
                seconds[key].append((time.perf_counter_ns() - start) / 1e9)
                tokens[key].append(count)
    finally:
        if was_enabled:
            gc.enable()
    result = {}
    for key in keys:
        rates = [n / s for n, s in zip(tokens[key], seconds[key], strict=True)]
        per_token_ms = [1e3 * s / max(n, 1) for n, s in zip(tokens[key], seconds[key], strict=True)]
        result[key] = {
            "tokens_per_s": float(np.median(rates)),
            "tokens_per_s_min": float(min(rates)),
            "tokens_per_s_max": float(max(rates)),
            "ms_per_token": summarize(per_token_ms, warmup=warmup).to_dict(),
            "new_tokens_per_run": int(np.median(tokens[key])),
            "runs": runs,
        }
    return result


def continue_prompts(
    prompts: Sequence[tuple[str, str, str]],
    tokenizer: Any,
    continuers: Sequence[tuple[str, str, Callable[[list[int]], tuple[list[int], str]]]],
) -> list[dict[str, Any]]:
    """Each (id, prompt, rest) continued by each model (``ids -> (new ids, finish reason)``),
    decoded with ``tokenizer`` (special tokens skipped)."""
    samples = []
    for example_id, prompt, rest in prompts:
        ids = list(tokenizer.encode(prompt).ids)
        continuations = []
        for key, name, continuer in continuers:
            new, reason = continuer(ids)
            continuations.append(
                {
                    "key": key,
                    "name": name,
                    "text": tokenizer.decode(new, skip_special_tokens=True),
                    "tokens": len(new),
                    "finish_reason": reason,
                }
            )
        samples.append(
            {
                "id": example_id,
                "prompt": prompt,
                "prompt_tokens": len(ids),
                "reference": rest,
                "continuations": continuations,
            }
        )
    return samples


# --------------------------------------------------------------------------- models


def _load_torch(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model folder is missing")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: cannot load the model: {exc}") from None
    return model.eval()


def _load_onnx(bundle: Path, path: Path, threads: int) -> Any:
    from distill.tasks.causal_lm.generate import OnnxCausalLM

    if not path.is_file():
        raise ArtifactError(f"{path}: the export stage's ONNX model is missing")
    # Loaded through the bundle folder: its tokenizer.json and EOS ids serve every file in it.
    return OnnxCausalLM.load(bundle, file_name=path.relative_to(bundle).as_posix(), threads=threads)


def _tokenizer(bundle: Path, fallback: Path) -> Any:
    from tokenizers import Tokenizer

    for folder in (bundle, fallback):
        path = folder / "tokenizer.json"
        if path.is_file():
            return Tokenizer.from_file(str(path))
    raise ArtifactError(
        f"{bundle / 'tokenizer.json'}: missing (and no {fallback / 'tokenizer.json'})"
    )


def _eos_ids(model: Any) -> list[int]:
    value = getattr(model.generation_config, "eos_token_id", None)
    if value is None:
        value = getattr(model.config, "eos_token_id", None)
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _greedy_config(model: Any, max_new_tokens: int, *, forced: bool) -> Any:
    """Plain greedy decoding whatever the checkpoint's generation_config.json asks for
    (sampling, repetition penalties); ``forced`` suppresses EOS for ``max_new_tokens`` tokens."""
    from transformers import GenerationConfig

    eos = _eos_ids(model)
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        pad = eos[0] if eos else 0
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        # Set outright: transformers 5 fills whatever is left unset from the model's own
        # generation config (a repetition penalty there would change greedy decoding).
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens if forced else None,
        eos_token_id=eos or None,
        pad_token_id=pad,
    )


def _torch_generate(model: Any, config: Any, ids: list[int]) -> list[int]:
    import torch

    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
        )
    return output[0, len(ids) :].tolist()


def _torch_caller(model: Any, max_new_tokens: int) -> Callable[[list[int]], int]:
    config = _greedy_config(model, max_new_tokens, forced=True)
    return lambda ids: len(_torch_generate(model, config, ids))


def _torch_continuer(
    model: Any, max_new_tokens: int
) -> Callable[[list[int]], tuple[list[int], str]]:
    config = _greedy_config(model, max_new_tokens, forced=False)
    eos = set(_eos_ids(model))

    def continuer(ids: list[int]) -> tuple[list[int], str]:
        new = _torch_generate(model, config, ids)
        return new, "eos" if new and new[-1] in eos else "length"

    return continuer


def _onnx_caller(lm: Any, max_new_tokens: int) -> Callable[[list[int]], int]:
    from distill.tasks.causal_lm.generate import generate

    return lambda ids: len(
        generate(lm, ids, max_new_tokens=max_new_tokens, eos_token_ids=()).token_ids
    )


def _onnx_continuer(lm: Any, max_new_tokens: int) -> Callable[[list[int]], tuple[list[int], str]]:
    from distill.tasks.causal_lm.generate import generate

    def continuer(ids: list[int]) -> tuple[list[int], str]:
        output = generate(lm, ids, max_new_tokens=max_new_tokens)
        return output.token_ids, output.finish_reason

    return continuer


# --------------------------------------------------------------------------- rows


def _torch_row(
    key: str, name: str, model_dir: Path, model: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """A PyTorch row: perplexities from the stage's metrics, size from its weight files,
    parameters counted on ``model`` (else the metrics' count), architecture from config.json."""
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model folder is missing")
    if model is not None:
        parameters: int | None = int(sum(p.numel() for p in model.parameters()))
    else:
        parameters = (metrics.get("parameters") or {}).get("total")
    files = weight_files(model_dir)
    return {
        "key": key,
        "name": name,
        "runtime": "pytorch",
        "precision": "fp32",
        "deployed": False,
        "parameters": parameters,
        "architecture": _architecture(model_dir),
        "bytes": sum(f.stat().st_size for f in files),
        "weight_files": [relative_path(f, model_dir.parent) for f in files],
        "perplexity": _number((metrics.get("test") or {}).get("perplexity")),
        "validation_perplexity": _number((metrics.get("validation") or {}).get("perplexity")),
        "test_tokens": (metrics.get("test") or {}).get("tokens"),
        "speed": None,
    }


def _architecture(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the model config: {exc}") from None
    return {
        "model_type": config.get("model_type"),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "vocab_size": config.get("vocab_size"),
    }


def _teacher_onnx(
    export_dir: Path, export_metrics: dict[str, Any], notes: list[str]
) -> dict[str, tuple[str, Path]]:
    """The teacher's ONNX files the export stage made (``export.teacher_baseline``):
    row key -> (precision, path); a note says why there are none."""
    baseline = export_metrics.get("teacher_baseline")
    if not baseline:
        notes.append("No teacher ONNX rows: the export stage made none (an older run).")
        return {}
    if "skipped" in baseline:
        notes.append(f"No teacher ONNX rows: {baseline['skipped']}.")
        return {}
    found = {}
    for precision in ("fp32", "int8"):
        relative = baseline.get(f"{precision}_model")
        if relative is None:
            continue
        path = export_dir / relative
        if not path.is_file():
            raise ArtifactError(f"{path}: the teacher's ONNX {precision} model is missing")
        found[f"teacher_onnx_{precision}"] = (precision, path)
    return found


def _versus(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """How many times smaller and faster ``row`` is than ``reference``, and both perplexities."""
    rate = (row.get("speed") or {}).get("tokens_per_s")
    reference_rate = (reference.get("speed") or {}).get("tokens_per_s")
    return {
        "name": reference["name"],
        "size_ratio": reference["bytes"] / row["bytes"] if row.get("bytes") else None,
        "speedup": rate / reference_rate if rate and reference_rate else None,
        "perplexity": reference.get("perplexity"),
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Against the teacher: times smaller (bytes), times faster (tokens/s), perplexity ratio."""
    teacher = rows[0]
    teacher_rate = (teacher.get("speed") or {}).get("tokens_per_s")
    for row in rows:
        row["size_ratio"] = teacher["bytes"] / row["bytes"] if row.get("bytes") else None
        rate = (row.get("speed") or {}).get("tokens_per_s")
        row["speedup"] = rate / teacher_rate if rate and teacher_rate else None
        ppl, reference = row.get("perplexity"), teacher.get("perplexity")
        row["perplexity_ratio"] = ppl / reference if ppl is not None and reference else None


# --------------------------------------------------------------------------- reading upstream


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _training(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"summary": training_summary(manifest), "wall_time_s": manifest.get("wall_time_s")}


def _recipe(manifests: dict[str, dict[str, Any]], config: ReportConfig) -> dict[str, Any]:
    """Each recipe table as the stage that used it recorded it (first recorder wins)."""
    recipe: dict[str, Any] = {}
    for name in UPSTREAM:
        for section, values in (manifests[name].get("config") or {}).items():
            if isinstance(values, dict):
                recipe.setdefault(section, values)
    recipe["report"] = task_dump(config, "report", TASK)
    return recipe
