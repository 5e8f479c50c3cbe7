"""Model cards (``README.md``) for a student folder and for the ONNX bundle.

Built with ``huggingface_hub.ModelCard`` / ``ModelCardData`` so the hub (and
``ModelCard.load``) read the metadata: ``base_model``, ``datasets``, ``license``, ``tags``
(always ``distillation`` and ``text-classification``), ``pipeline_tag`` and the test
metrics as a ``model-index``. Nothing here touches the network: ``card.validate()``
would post the card to the hub and is never called.

Only hub ids go into ``base_model`` and ``datasets`` (the hub rejects anything else); a
teacher or data set given as a local path or a ``pkg:`` reference is named in the text.
A license is filled in only when it is known: read from the model card of the teacher's
source (a local folder's ``README.md``, or a hub model's card already in the local
cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from distill.pipeline.artifacts import read_manifest
from distill.tasks.classification.model_card_parts import (
    CARD_FILE,
    TASK,
    code,
    display_source,
    eval_results,
    first_of,
    fmt,
    fmt_ms,
    hub_id,
    make_card,
    md,
    read_card_data,
    source_license,
    source_line,
)

__all__ = ["CARD_FILE", "bundle_card", "hub_id", "student_card", "write_student_card"]

TAGS = ["distillation", "text-classification"]


# --------------------------------------------------------------------------- student folder


def student_card(
    *,
    run_name: str,
    label_names: list[str],
    test_metrics: dict[str, Any],
    teacher: str | None,
    init: str,
    student_model: str | None = None,
    data_source: str | None = None,
    variant: str = "distilled",
    temperature: float | None = None,
    alpha: float | None = None,
    layers: list[int] | None = None,
    parameters: int | None = None,
    license: str | None = None,
    base_dir: Path | None = None,
) -> ModelCard:
    """The model card of a student trained by ``distill``.

    ``test_metrics`` holds the test split's ``accuracy``, ``macro_f1``, ``agreement`` (with
    the teacher) and ``examples``. ``teacher`` is the teacher's source as the recipe gave it
    (hub id, path or ``pkg:`` reference); ``base_model`` is ``student_model`` when the student
    started from another pre-trained model (``init = "pretrained"``), else the teacher's
    source, whose weights it was cut from (``teacher-layers``) or whose config it copied
    (``config``). ``base_dir`` resolves relative paths (the recipe's folder).
    """
    base_dir = base_dir or Path.cwd()
    base_source = student_model if init == "pretrained" and student_model else teacher
    dataset = hub_id(data_source, base_dir)
    if license is None:
        license = source_license(base_source, base_dir) or source_license(teacher, base_dir)
    model_name = f"{run_name} student" + ("" if variant == "distilled" else f" ({variant})")
    dataset_name = dataset or display_source(data_source) or "test split"
    results = eval_results(test_metrics, dataset or "custom", dataset_name)
    data = ModelCardData(
        base_model=hub_id(base_source, base_dir),
        datasets=[dataset] if dataset else None,
        license=license,
        library_name="transformers",
        pipeline_tag=TASK,
        tags=list(TAGS),
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=results or None,
        # distill's own record (the hub ignores unknown keys); bundle_card reads it back.
        distill={
            "run": run_name,
            "variant": variant,
            "teacher": teacher,
            "init": init,
            **({"temperature": temperature, "alpha": alpha} if alpha else {}),
        },
    )
    lines = [
        f"# {md(model_name)}",
        "",
        _student_intro(run_name, teacher, variant),
        "",
        "## How it was made",
        "",
        f"- Teacher: {source_line(teacher, base_dir)}",
        f"- Student initialisation: `{code(init)}`"
        + (f" from {source_line(student_model, base_dir)}" if student_model else "")
        + (f", teacher layers {layers}" if layers else ""),
    ]
    if variant == "distilled" and (temperature is not None or alpha is not None):
        lines.append(_objective(temperature, alpha))
    if parameters:
        lines.append(f"- Parameters: {parameters:,}")
    lines.append(f"- Training data: {source_line(data_source, base_dir)}")
    lines += _student_evaluation(test_metrics) + _student_use(label_names)
    return make_card(data, "\n".join(lines))


def _student_intro(run_name: str, teacher: str | None, variant: str) -> str:
    """The card's first sentence: a distilled student, or its no-distillation twin."""
    teacher_name = code(display_source(teacher) or "unknown")
    if variant == "distilled":
        return (
            f"A small text classifier distilled by `distill` (run `{code(run_name)}`) from the "
            f"teacher `{teacher_name}`."
        )
    return (
        f"The no-distillation twin of the `{code(run_name)}` student: same architecture, "
        "initialisation and budget, trained on the gold labels only (no teacher), for "
        f"comparison with the distilled student of teacher `{teacher_name}`."
    )


def _objective(temperature: float | None, alpha: float | None) -> str:
    """The distillation objective's bullet."""
    if temperature is not None and alpha is not None:
        return (
            "- Objective: alpha x T² x KL(teacher ‖ student at temperature T) + (1 - alpha) x "
            f"cross-entropy, with T = {temperature:g} and alpha = {alpha:g}"
        )
    return f"- Distillation: temperature {temperature}, alpha {alpha}"


def _student_evaluation(test_metrics: dict[str, Any]) -> list[str]:
    """The card's test-split table."""
    lines = [
        "",
        "## Evaluation (test split)",
        "",
        "| Metric | Value |",
        "| --- | ---: |",
        f"| accuracy | {fmt(test_metrics.get('accuracy'))} |",
        f"| macro-F1 | {fmt(test_metrics.get('macro_f1'))} |",
    ]
    if test_metrics.get("agreement") is not None:
        lines.append(f"| agreement with the teacher | {fmt(test_metrics['agreement'])} |")
    if test_metrics.get("examples"):
        lines.append(f"| test examples | {int(test_metrics['examples'])} |")
    return lines


def _student_use(label_names: list[str]) -> list[str]:
    """The card's labels and how to load the folder with transformers."""
    return [
        "",
        "## Labels",
        "",
        _labels_line(label_names),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classifier = pipeline("text-classification", model="path/to/this/folder")',
        'classifier("some text")',
        "```",
        "",
        "The folder is a plain `save_pretrained` folder (safetensors weights, tokenizer, "
        "`config.json` with the label names).",
        "",
    ]


def _labels_line(label_names: list[str]) -> str:
    return ", ".join(f"`{i}`: {md(name)}" for i, name in enumerate(label_names))


def write_student_card(
    model_dir: Path,
    *,
    run_name: str,
    label_names: list[str],
    stage_metrics: dict[str, Any],
    student: Any,
    teacher_stage: Path,
    data_source: str | None = None,
    variant: str = "distilled",
    base_dir: Path | None = None,
) -> Path:
    """Write ``model_dir/README.md`` from what the student stage has at hand.

    ``stage_metrics`` is what the stage records for the variant (``test``, ``built``,
    ``parameters``, ``alpha``); ``student`` the recipe's ``[student]`` table; the teacher's
    source comes from the teacher stage's manifest (``metrics.source``), when it has one.
    """
    manifest = read_manifest(teacher_stage) or {}
    teacher = (manifest.get("metrics") or {}).get("source") or (
        ((manifest.get("config") or {}).get("teacher") or {}).get("model")
    )
    built = stage_metrics.get("built") or {}
    parameters = stage_metrics.get("parameters")
    alpha = stage_metrics.get("alpha", getattr(student, "alpha", None))
    card = student_card(
        run_name=run_name,
        label_names=label_names,
        test_metrics=stage_metrics.get("test") or {},
        teacher=teacher,
        init=built.get("init") or getattr(student, "init", "teacher-layers"),
        student_model=getattr(student, "model", None),
        data_source=data_source,
        variant=variant,
        temperature=getattr(student, "temperature", None) if alpha else None,
        alpha=alpha if alpha else None,
        layers=built.get("teacher_layers"),
        parameters=parameters.get("total") if isinstance(parameters, dict) else parameters,
        base_dir=base_dir,
    )
    path = Path(model_dir) / CARD_FILE
    card.save(path)
    return path


# --------------------------------------------------------------------------- ONNX bundle


def bundle_card(
    bundle_dir: Path,
    manifest: dict[str, Any],
    *,
    teacher: str | None = None,
    data_source: str | None = None,
    license: str | None = None,
    base_dir: Path | None = None,
    student_readme: Path | None = None,
) -> str:
    """The model card (``README.md`` text) of an exported ONNX bundle.

    ``manifest`` is the bundle's ``manifest.json`` (see the export stage) or the export
    stage's metrics merged into it: it reads ``labels``, ``precision``, ``quantization``,
    ``max_length``, ``files`` and, from ``metrics`` (or the top level), ``fp32_accuracy``,
    ``int8_accuracy``, the macro-F1s, ``accuracy_drop``, ``parity_max_abs_diff``,
    ``test_examples`` and ``fp32_latency_ms`` / ``int8_latency_ms`` (batch-1 median at
    ``max_length``). The int8 accuracy is also given as a ratio of the fp32 one. Without
    ``files`` in the manifest (the card is written before the manifest that hashes it), the
    files in ``bundle_dir`` are listed.

    ``student_readme``, the student folder's card (see :func:`write_student_card`), fills
    in what is not given: the teacher, ``base_model``, ``datasets`` and ``license``.
    """
    bundle_dir = Path(bundle_dir)
    base_dir = base_dir or Path.cwd()
    inherited = read_card_data(student_readme)
    teacher = teacher or (inherited.get("distill") or {}).get("teacher")
    license = license or inherited.get("license")
    metrics = {**manifest, **(manifest.get("metrics") or {})}
    precision = manifest.get("precision") or ("int8" if metrics.get("int8_accuracy") else "fp32")
    ratio = _int8_ratio(metrics)
    dataset = hub_id(data_source, base_dir) or first_of(inherited.get("datasets"))
    if license is None:
        license = source_license(teacher, base_dir)
    run = manifest.get("run") or bundle_dir.name
    model_name = f"{run} student (ONNX {precision})"
    data = ModelCardData(
        base_model=hub_id(teacher, base_dir) or inherited.get("base_model"),
        datasets=[dataset] if dataset else None,
        license=license,
        library_name="onnx",
        pipeline_tag=TASK,
        tags=[*TAGS, "onnx", *(["int8"] if precision == "int8" else [])],
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=_bundle_eval_results(
            metrics, precision, ratio, dataset, dataset or display_source(data_source)
        )
        or None,
    )
    quantization = manifest.get("quantization")
    max_length = manifest.get("max_length")
    lines = [
        f"# {md(model_name)}",
        "",
        f"The student of the `distill` run `{code(run)}`, exported to ONNX"
        + (f" and quantized to int8 ({md(quantization)})" if precision == "int8" else "")
        + (f", distilled from **{md(display_source(teacher))}**" if teacher else "")
        + ". Tokenizer files and `config.json` (with the label names) are included.",
        "",
        *_bundle_measurements(metrics, ratio, max_length),
    ]
    labels = list(manifest.get("labels") or [])
    if labels:
        lines += ["## Labels", "", _labels_line(labels), ""]
    lines += _bundle_use(max_length)
    lines += _bundle_files(_files(bundle_dir, manifest))
    return str(make_card(data, "\n".join(lines).rstrip() + "\n"))


def _int8_ratio(metrics: dict[str, Any]) -> float | None:
    """int8 accuracy / fp32 accuracy, when both were measured."""
    fp32_accuracy, int8_accuracy = metrics.get("fp32_accuracy"), metrics.get("int8_accuracy")
    if isinstance(int8_accuracy, int | float) and fp32_accuracy:
        return int8_accuracy / fp32_accuracy
    return None


def _bundle_eval_results(
    metrics: dict[str, Any],
    precision: str,
    ratio: float | None,
    dataset: str | None,
    dataset_name: str | None,
) -> list[EvalResult]:
    """The deployed model's accuracy and macro-F1, and the int8 / fp32 accuracy ratio."""
    int8 = precision == "int8"
    deployed = {
        "accuracy": metrics.get("int8_accuracy" if int8 else "fp32_accuracy"),
        "macro_f1": metrics.get("int8_macro_f1" if int8 else "fp32_macro_f1"),
    }
    results = eval_results(deployed, dataset or "custom", dataset_name or "test split")
    if ratio is not None:
        results.append(
            EvalResult(
                task_type=TASK,
                dataset_type=dataset or "custom",
                dataset_name=dataset_name or "test split",
                dataset_split="test",
                metric_type="accuracy_ratio",
                metric_name="int8 accuracy / fp32 accuracy",
                metric_value=round(ratio, 6),
            )
        )
    return results


def _bundle_measurements(
    metrics: dict[str, Any], ratio: float | None, max_length: int | None
) -> list[str]:
    """The fp32 / int8 table, the facts drawn from it and what the latency is."""
    fp32_latency, int8_latency = metrics.get("fp32_latency_ms"), metrics.get("int8_latency_ms")
    lines = [
        "## Accuracy and latency (test split)",
        "",
        "| | fp32 | int8 |",
        "| --- | ---: | ---: |",
        f"| accuracy | {fmt(metrics.get('fp32_accuracy'))} | {fmt(metrics.get('int8_accuracy'))} |",
        f"| macro-F1 | {fmt(metrics.get('fp32_macro_f1'))} | {fmt(metrics.get('int8_macro_f1'))} |",
        f"| latency, batch 1, p50 (ms) | {fmt_ms(fp32_latency)} | {fmt_ms(int8_latency)} |",
        "",
    ]
    facts = _bundle_facts(metrics, ratio)
    if facts:
        lines += [*(f"- {fact}" for fact in facts), ""]
    if fp32_latency or int8_latency:
        lines += [
            "Latency is the export stage's quick check: one example padded to "
            f"{max_length or 'max_length'} tokens, ONNX Runtime on the CPU that ran the export; "
            "the run's report measures it properly.",
            "",
        ]
    return lines


def _bundle_facts(metrics: dict[str, Any], ratio: float | None) -> list[str]:
    """int8 against fp32 in words, the test size and the ONNX-vs-PyTorch parity."""
    facts = []
    if ratio is not None:
        facts.append(
            f"int8 keeps {100 * ratio:.2f}% of the fp32 accuracy (int8 / fp32 = {ratio:.4f})"
        )
    if metrics.get("accuracy_drop") is not None:
        drop = metrics["accuracy_drop"]
        facts.append(
            f"int8 {'loses' if drop >= 0 else 'gains'} {abs(100 * drop):.2f} accuracy points "
            "against fp32"
        )
    fp32_latency, int8_latency = metrics.get("fp32_latency_ms"), metrics.get("int8_latency_ms")
    if fp32_latency and int8_latency:
        facts.append(f"int8 is {fp32_latency / int8_latency:.2f}x the speed of fp32")
    if metrics.get("test_examples"):
        facts.append(f"{int(metrics['test_examples'])} test examples")
    if metrics.get("parity_max_abs_diff") is not None:
        facts.append(
            f"fp32 ONNX vs PyTorch max |logit difference| {metrics['parity_max_abs_diff']:.2e}"
        )
    return facts


def _bundle_use(max_length: int | None) -> list[str]:
    """How to run the bundle with onnxruntime alone, or with distill predict."""
    return [
        "## Use",
        "",
        "With onnxruntime, tokenizers and numpy alone (no torch):",
        "",
        "```python",
        "import json",
        "",
        "import numpy as np",
        "import onnxruntime as ort",
        "from tokenizers import Tokenizer",
        "",
        'bundle = "path/to/bundle"',
        'tokenizer = Tokenizer.from_file(f"{bundle}/tokenizer.json")',
        f"tokenizer.enable_truncation({max_length or 512})",
        'session = ort.InferenceSession(f"{bundle}/model.onnx", providers=["CPUExecutionProvider"])',
        'labels = json.load(open(f"{bundle}/config.json"))["id2label"]',
        'encoding = tokenizer.encode("your text")',
        'fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}',
        "feeds = {",
        "    i.name: np.array([getattr(encoding, fields[i.name])], dtype=np.int64)",
        "    for i in session.get_inputs()",
        "}",
        'logits = session.run(["logits"], feeds)[0]',
        "print(labels[str(int(logits.argmax(-1)[0]))])",
        "```",
        "",
        'Or `distill predict path/to/bundle "your text"`. optimum\'s '
        '`ORTModelForSequenceClassification.from_pretrained(bundle, file_name="model.onnx")` '
        "also loads the folder, for those who install optimum themselves.",
        "",
        f"Tokenize with truncation to {max_length} tokens, as in training." if max_length else "",
    ]


def _files(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's files, else the files in the bundle folder (card and manifest aside)."""
    return manifest.get("files") or {
        path.relative_to(bundle_dir).as_posix(): {"bytes": path.stat().st_size}
        for path in sorted(bundle_dir.rglob("*"))
        if path.is_file() and path.name not in (CARD_FILE, "manifest.json")
    }


def _bundle_files(files: dict[str, dict[str, Any]]) -> list[str]:
    """The bundle's files as a table (nothing when there are none)."""
    if not files:
        return []
    return [
        "",
        "## Files",
        "",
        "| File | Role | Bytes |",
        "| --- | --- | ---: |",
        *(
            f"| `{code(name)}` | {md(info.get('role') or '–')} | {info.get('bytes', '')} |"
            for name, info in sorted(files.items())
        ),
        "",
        "`manifest.json` lists each file's sha256.",
    ]
