"""The report stage on fake upstream folders: tiny real models, real ONNX files, known logits."""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import build_tiny_classifier, synthetic_rows

from distill.config import ReportConfig
from distill.data.files import save_logits, write_label_names
from distill.pipeline.artifacts import RunContext, read_manifest, write_manifest
from distill.tasks.classification.files import Split, write_split
from distill.tasks.classification.metrics import classification_metrics

# Label names that would break HTML and Markdown if written unescaped.
LABELS = ["<script>alert(1)</script>", "neg|ative & co"]
MAX_LENGTH = 32
# Appended to some test texts: shown among the disagreements, it must stay inert text.
INJECTION = " <img src=x onerror=alert(1)> ![t](//tracker.invalid/t.png) a|b `c`"
SPLIT_SIZES = {"train": 160, "validation": 40, "test": 60}


def _splits() -> dict[str, Split]:
    rows = synthetic_rows(sum(SPLIT_SIZES.values()), seed=3)
    splits, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        chunk = rows[start : start + size]
        start += size
        splits[name] = Split(
            ids=[f"{name}-{i}" for i in range(size)],
            texts=[text for text, _ in chunk],
            labels=np.asarray(
                [0 if label == "positive" else 1 for _, label in chunk], dtype=np.int64
            ),
        )
    test = splits["test"]
    texts = [text + INJECTION if i % 3 == 0 else text for i, text in enumerate(test.texts)]
    splits["test"] = Split(ids=test.ids, texts=texts, labels=test.labels)
    return splits


def _noisy_logits(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Logits whose argmax equals the label for about ``accuracy`` of the rows."""
    rng = np.random.default_rng(seed)
    predicted = np.where(rng.random(labels.size) < accuracy, labels, 1 - labels)
    logits = rng.normal(0.0, 0.3, size=(labels.size, 2)).astype(np.float32)
    logits[np.arange(labels.size), predicted] += 2.0
    return logits


@pytest.fixture(scope="module")
def upstream(report_upstream: dict[str, Any]) -> dict[str, Any]:
    return report_upstream  # built once per session (conftest.py), read only


def build_upstream(root: Path) -> dict[str, Any]:
    """Fake data/teacher/student/export stage folders under ``root`` (also used by
    tests/test_report_browser.py and tests/test_compare.py)."""
    folders = {name: root / name for name in ("data", "teacher", "student", "export")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    splits = _splits()
    data_config = {"path": "synthetic.csv", "max_length": MAX_LENGTH}

    # data
    for name, split in splits.items():
        write_split(folders["data"] / f"{name}.jsonl", split)
    write_label_names(folders["data"], LABELS)
    write_manifest(
        folders["data"],
        {"stage": "data", "config": {"data": data_config}, "metrics": {}, "wall_time_s": 0.5},
    )

    # teacher: logits for every split
    build_tiny_classifier(folders["teacher"] / "model", num_labels=2, layers=4, seed=0)
    (folders["teacher"] / "logits").mkdir()
    logits = {"teacher": _noisy_logits(splits["test"].labels, 0.9, seed=1)}
    for name, split in splits.items():
        values = logits["teacher"] if name == "test" else _noisy_logits(split.labels, 0.9, seed=2)
        save_logits(folders["teacher"] / "logits" / f"{name}.npz", split.ids, values)
    history = [
        {"loss": 0.7, "step": 5},
        {"eval_loss": 0.6, "eval_accuracy": 0.7, "step": 5},
        {"loss": 0.4, "step": 10},
        {"eval_loss": 0.5, "eval_accuracy": 0.85, "step": 10},
    ]
    (folders["teacher"] / "log_history.json").write_text(json.dumps(history), encoding="utf-8")
    teacher_config = {"model": "tiny-bert", "epochs": 1.0, "learning_rate": 5e-5}
    write_manifest(
        folders["teacher"],
        {
            "stage": "teacher",
            "task": "sequence-classification",
            "config": {"data": data_config, "teacher": teacher_config},
            "metrics": {
                "steps": 10,
                "epochs_run": 1.0,
                "budget": {"why": "1 epochs x 10 steps/epoch = 10 steps (>= min_steps 0)"},
                # as the history above says: the last evaluation is the best, 0.6 -> 0.5
                "still_improving": {
                    "previous_eval_loss": 0.6,
                    "last_eval_loss": 0.5,
                    "relative_drop": 1 / 6,
                },
            },
            "wall_time_s": 12.5,
        },
    )

    # student (+ its no-distillation twin), test logits stored shuffled to exercise id alignment
    student_config = {"init": "teacher-layers", "num_layers": 2, "temperature": 2.0, "alpha": 0.5}
    test = splits["test"]
    order = np.random.default_rng(5).permutation(len(test))
    for sub, accuracy, seed in (("", 0.8, 3), ("baseline", 0.7, 4)):
        folder = folders["student"] / sub
        build_tiny_classifier(folder / "model", num_labels=2, layers=2, seed=seed)
        (folder / "logits").mkdir()
        values = _noisy_logits(test.labels, accuracy, seed=seed)
        logits["student" if not sub else "student_no_kd"] = values
        save_logits(folder / "logits" / "test.npz", [test.ids[i] for i in order], values[order])
    (folders["student"] / "log_history.json").write_text(json.dumps(history[:2]), encoding="utf-8")
    write_manifest(
        folders["student"],
        {
            "stage": "student",
            "config": {"data": data_config, "student": student_config},
            "metrics": {},
            "wall_time_s": 7.25,
        },
    )

    # export: real fp32 ONNX file and a real dynamic-int8 copy of it
    bundle = folders["export"] / "bundle"
    _onnx_pair(
        folders["student"] / "model", bundle / "fp32" / "model_fp32.onnx", bundle / "model.onnx"
    )
    (bundle / "manifest.json").write_text(
        json.dumps({"label_names": LABELS, "max_length": MAX_LENGTH}), encoding="utf-8"
    )
    (folders["export"] / "predictions").mkdir()
    rng = np.random.default_rng(6)
    logits["student_onnx_fp32"] = logits["student"] + rng.normal(0, 1e-6, logits["student"].shape)
    logits["student_onnx_int8"] = _noisy_logits(test.labels, 0.75, seed=7)
    for key, file in (
        ("student_onnx_fp32", "test_fp32.npz"),
        ("student_onnx_int8", "test_int8.npz"),
    ):
        save_logits(folders["export"] / "predictions" / file, test.ids, logits[key])
    _teacher_baseline(folders, logits, test)
    write_manifest(
        folders["export"],
        {
            "stage": "export",
            "config": {"data": data_config, "export": {"quantization": "dynamic"}},
            "metrics": {"teacher_baseline": {"int8": {"candidate": "dynamic"}}},
            "wall_time_s": 3.0,
        },
    )
    return {"folders": folders, "splits": splits, "logits": logits}


def _onnx_pair(model_dir: Path, fp32: Path, int8: Path) -> None:
    """A real fp32 ONNX export of ``model_dir`` (the graph file only) and a dynamic-int8 copy."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from distill.export.exporter import export_onnx

    work = fp32.parent / "export-work"
    export_onnx(model_dir, work, model_class="AutoModelForSequenceClassification")
    fp32.parent.mkdir(parents=True, exist_ok=True)
    (work / "model.onnx").rename(fp32)
    shutil.rmtree(work)
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)


def _teacher_baseline(folders: dict[str, Path], logits: dict[str, Any], test: Split) -> None:
    """export/teacher/ as the export stage writes it: the teacher's real fp32 ONNX file, a
    real dynamic-int8 copy, and known test predictions (stored shuffled)."""
    folder = folders["export"] / "teacher"
    _onnx_pair(folders["teacher"] / "model", folder / "model_fp32.onnx", folder / "model_int8.onnx")
    rng = np.random.default_rng(8)
    logits["teacher_onnx_fp32"] = logits["teacher"] + rng.normal(0, 1e-6, logits["teacher"].shape)
    logits["teacher_onnx_int8"] = _noisy_logits(test.labels, 0.85, seed=9)
    order = rng.permutation(len(test))
    (folder / "predictions").mkdir()
    for key in ("teacher_onnx_fp32", "teacher_onnx_int8"):
        file = folder / "predictions" / f"test_{key.rsplit('_', 1)[1]}.npz"
        save_logits(file, [test.ids[i] for i in order], logits[key][order])


def run_report(upstream: dict[str, Any], out: Path, **overrides: Any) -> dict[str, Any]:
    from distill.tasks.classification.stages import report as report_stage

    ctx = RunContext(
        name="unit<run>",
        seed=13,
        task="sequence-classification",
        workdir=out.parent,
        recipe_dir=out.parent,
    )
    settings = {"latency_runs": 3, "latency_warmup": 1, "latency_threads": 1, **overrides}
    config = ReportConfig(**settings)
    out.mkdir(parents=True)
    return report_stage.run(ctx, upstream["folders"], out, report=config)


@pytest.fixture(scope="module")
def report_dir(unit_report: Path) -> Path:
    return unit_report  # run once per session (conftest.py), read only


@pytest.fixture(scope="module")
def document(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / "report.json").read_text(encoding="utf-8"))


def _rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in document["rows"]}


ROW_KEYS = (
    "teacher",
    "student",
    "student_no_kd",
    "student_onnx_fp32",
    "student_onnx_int8",
    "teacher_onnx_fp32",
    "teacher_onnx_int8",
    "tfidf",
)


def test_files_written(report_dir: Path, document: dict[str, Any]) -> None:
    for name in (
        "report.json",
        "report.md",
        "report.html",
        "accuracy_vs_size.svg",
        "accuracy_vs_latency.svg",
        "reliability.svg",
        "training_curves.svg",
    ):
        assert (report_dir / name).is_file(), name
    assert document["schema_version"] == 2
    assert list(_rows(document)) == list(ROW_KEYS)


def test_metrics_match_the_logits_written(
    upstream: dict[str, Any], document: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    teacher = upstream["logits"]["teacher"]
    rows = _rows(document)
    for key in ROW_KEYS[:-1]:
        expected = classification_metrics(
            upstream["logits"][key], labels, 2, reference_logits=teacher
        )
        assert rows[key]["accuracy"] == pytest.approx(expected["accuracy"]), key
        assert rows[key]["macro_f1"] == pytest.approx(expected["macro_f1"]), key
        assert rows[key]["agreement"] == pytest.approx(expected["agreement"]), key
        assert rows[key]["examples"] == SPLIT_SIZES["test"]
    assert rows["teacher"]["agreement"] == 1.0
    assert rows["teacher"]["accuracy"] == pytest.approx((teacher.argmax(-1) == labels).mean())
    assert rows["student_onnx_fp32"]["max_abs_logit_diff_vs_student"] < 1e-4


def test_sizes_parameters_and_ratios(upstream: dict[str, Any], document: dict[str, Any]) -> None:
    folders = upstream["folders"]
    rows = _rows(document)
    teacher_bytes = (folders["teacher"] / "model" / "model.safetensors").stat().st_size
    assert rows["teacher"]["bytes"] == teacher_bytes
    assert (
        rows["student"]["bytes"]
        == (folders["student"] / "model" / "model.safetensors").stat().st_size
    )
    assert (
        rows["student_onnx_fp32"]["bytes"]
        == (folders["export"] / "bundle/fp32/model_fp32.onnx").stat().st_size
    )
    assert (
        rows["student_onnx_int8"]["bytes"]
        == (folders["export"] / "bundle/model.onnx").stat().st_size
    )
    assert rows["student_onnx_int8"]["deployed"] is True
    assert rows["student_onnx_fp32"]["deployed"] is False
    assert rows["teacher"]["parameters"] > rows["student"]["parameters"] > 0
    assert rows["student_onnx_int8"]["parameters"] == rows["student"]["parameters"]
    assert rows["teacher"]["size_ratio"] == 1.0 and rows["teacher"]["speedup"] == 1.0
    assert rows["student"]["size_ratio"] == pytest.approx(teacher_bytes / rows["student"]["bytes"])
    teacher_p50 = rows["teacher"]["latency"]["p50_ms"]
    student_p50 = rows["student"]["latency"]["p50_ms"]
    assert rows["student"]["speedup"] == pytest.approx(teacher_p50 / student_p50)


def test_latency_recorded_with_its_setup(document: dict[str, Any]) -> None:
    rows = _rows(document)
    timed = ("teacher", "student", "student_onnx_fp32", "student_onnx_int8")
    for key in (*timed, "teacher_onnx_fp32", "teacher_onnx_int8"):
        latency = rows[key]["latency"]
        assert latency["runs"] == 3 and latency["warmup"] == 1, key
        assert latency["threads"] == 1 and latency["batch_size"] == 1, key
        assert latency["sequence_length"] == MAX_LENGTH, key
        assert 0 < latency["p50_ms"] <= latency["p95_ms"], key
    assert rows["tfidf"]["latency"] is None
    setup = document["latency_setup"]
    assert (setup["threads"], setup["batch_size"], setup["sequence_length"]) == (1, 1, MAX_LENGTH)
    assert setup["rounds"] == 3  # one interleaved run: 3 timed runs, one per round
    assert document["hardware"]["cpu"] and document["hardware"]["logical_cores"] >= 1


def test_tfidf_floor_and_flags(document: dict[str, Any]) -> None:
    rows = _rows(document)
    tfidf = rows["tfidf"]
    assert tfidf["kind"] == "baseline"
    assert tfidf["accuracy"] > 0.75  # chance is 0.5; the synthetic cue words make it learnable
    assert document["baseline"]["accuracy"] == tfidf["accuracy"]
    expected_below = [key for key in ROW_KEYS[:-1] if not rows[key]["accuracy"] > tfidf["accuracy"]]
    assert document["baseline"]["below_baseline"] == expected_below
    for key in ROW_KEYS[:-1]:
        assert rows[key]["beats_baseline"] is (key not in expected_below)


def test_recipe_data_versions_wall_times(document: dict[str, Any]) -> None:
    assert document["recipe"]["teacher"]["model"] == "tiny-bert"
    assert document["recipe"]["student"]["alpha"] == 0.5
    assert document["recipe"]["report"]["latency_runs"] == 3
    assert document["distillation"]["settings"]["temperature"] == 2.0
    rows = _rows(document)
    assert document["distillation"]["accuracy_gain_over_no_kd"] == pytest.approx(
        rows["student"]["accuracy"] - rows["student_no_kd"]["accuracy"]
    )
    splits = document["data"]["splits"]
    assert {name: info["examples"] for name, info in splits.items()} == SPLIT_SIZES
    assert sum(splits["train"]["label_counts"].values()) == SPLIT_SIZES["train"]
    assert document["labels"] == LABELS
    assert document["wall_time_s"]["teacher"] == 12.5
    assert document["wall_time_s"]["student"] == 7.25
    assert "torch" in document["versions"] and "python" in document["versions"]
    assert document["training"]["teacher"]["curves"]["eval_accuracy"] == [[5.0, 0.7], [10.0, 0.85]]


def test_returned_metrics_are_small_and_match(report_dir: Path, document: dict[str, Any]) -> None:
    metrics = json.loads((report_dir / "returned_metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["rows"]) == set(ROW_KEYS)
    assert metrics["rows"]["student"]["accuracy"] == _rows(document)["student"]["accuracy"]
    assert metrics["rows"]["student"]["ece"] == _rows(document)["student"]["calibration"]["ece"]
    assert metrics["below_baseline"] == document["baseline"]["below_baseline"]
    significance = document["distillation"]["significance"]
    assert metrics["kd_significance"] == {
        key: significance[key]
        for key in ("accuracy_difference", "p_value", "ci_low", "ci_high", "significant")
    }


class _Checker(HTMLParser):
    """Collects tags, checks nesting, and records anything that would load from elsewhere."""

    VOID: ClassVar[set[str]] = {
        "meta",
        "br",
        "img",
        "input",
        "link",
        "hr",
        "col",
        "source",
        "wbr",
        "area",
        "base",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and not value.startswith("#"):
                self.external.append(value)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_one_escaped_self_contained_page(
    report_dir: Path, document: dict[str, Any]
) -> None:
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert checker.external == []
    assert "script" not in checker.tags and "link" not in checker.tags
    # accuracy vs size, accuracy vs latency, reliability diagrams, training curves
    assert html.count("<svg") == 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the label name, escaped
    assert "img" not in checker.tags  # the example text with an <img> tag stays text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    for section in (
        "accuracy-vs-latency",
        "per-class-f1",
        "confusion-teacher",
        "confusion-student_onnx_int8",
        "calibration-table",
        "reliability-diagram",
        "disagreement-examples",
        "size-breakdown-table",
        "training-curves",
    ):
        assert f'id="{section}"' in html, section
    assert "unit&lt;run&gt;" in html
    assert set(re.findall(r"https?://[^\"'\s]+", html)) <= {  # XML namespaces only
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    assert "@import" not in html
    assert re.findall(r"url\((?!#)", html) == []  # only references inside the page
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate ids"
    referenced = set(re.findall(r'(?:url\(#|href="#)([^)"]+)', html))
    assert referenced <= set(ids)
    for row in document["rows"]:
        assert f'id="row-{row["key"]}"' in html
    text = "".join(checker.text)
    for row in document["rows"]:
        assert row["name"] in text
    if document["baseline"]["below_baseline"]:
        assert 'id="below-baseline"' in html
        first = _rows(document)[document["baseline"]["below_baseline"][-1]]["name"]
        assert f"{first} did not beat the TF-IDF" in " ".join(text.split())


def test_markdown_table_has_a_row_per_model(report_dir: Path, document: dict[str, Any]) -> None:
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = next(i for i, line in enumerate(table) if line.startswith("| Model |"))
    columns = table[header].count("|")
    body = table[header + 2 : header + 2 + len(document["rows"])]
    for row, line in zip(document["rows"], body, strict=True):
        assert line.startswith(f"| {row['name']}"), line
        assert line.count("|") == columns, line
        assert f"{100 * row['accuracy']:.2f}%" in line
    assert "<script>" not in markdown
    assert "neg\\|ative &amp; co" in markdown  # a pipe in a label cannot split a table cell
    assert "](accuracy_vs_size.svg)" in markdown
    assert re.search(r"\| data \| 0\.5 \|", markdown)


def test_quantization_none_and_no_baseline(upstream: dict[str, Any], tmp_path: Path) -> None:
    folders = dict(upstream["folders"])
    export = tmp_path / "export"
    shutil.copytree(folders["export"], export)
    shutil.move(export / "bundle" / "fp32" / "model_fp32.onnx", export / "bundle" / "model.onnx")
    shutil.rmtree(export / "bundle" / "fp32")
    (export / "predictions" / "test_int8.npz").unlink()
    manifest = read_manifest(folders["export"])
    assert manifest is not None
    write_manifest(
        export,
        {
            "stage": "export",
            "config": {"export": {"quantization": "none"}},
            "metrics": {},
            "wall_time_s": 1.0,
        },
    )
    folders["export"] = export
    run_report({"folders": folders}, tmp_path / "out", tfidf_baseline=False, latency_batch_size=2)
    document = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    rows = _rows(document)
    assert "student_onnx_int8" not in rows and "tfidf" not in rows
    assert rows["student_onnx_fp32"]["deployed"] is True
    assert rows["student_onnx_fp32"]["latency"]["batch_size"] == 2
    assert document["baseline"] is None
    assert any("quantization = none" in note for note in document["notes"])
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and 'id="below-baseline"' not in html
    # The deployed model is the fp32 ONNX file: its disagreements with the teacher are listed.
    disagreements = document["disagreements"]
    assert disagreements["student"] == "student_onnx_fp32"
    teacher = upstream["logits"]["teacher"].argmax(-1)
    fp32 = upstream["logits"]["student_onnx_fp32"].argmax(-1)
    assert disagreements["total"] == int((teacher != fp32).sum())
    assert 'id="confusion-student_onnx_fp32"' in html


def test_missing_manifest_is_a_clear_error(upstream: dict[str, Any], tmp_path: Path) -> None:
    from distill.errors import ArtifactError

    folders = dict(upstream["folders"])
    folders["export"] = tmp_path / "export-without-manifest"
    folders["export"].mkdir()
    with pytest.raises(ArtifactError, match="export stage has no complete manifest"):
        run_report({"folders": folders}, tmp_path / "out")


def test_rerender_from_json_alone(report_dir: Path, tmp_path: Path) -> None:
    from distill.tasks.classification import render

    document = render.load_report(report_dir / "report.json")
    paths = render.write_reports(document, tmp_path)
    assert paths["html"].read_text(encoding="utf-8") == (report_dir / "report.html").read_text(
        encoding="utf-8"
    )
    assert paths["markdown"].read_text(encoding="utf-8") == (report_dir / "report.md").read_text(
        encoding="utf-8"
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**document, "schema_version": 99}), encoding="utf-8")
    with pytest.raises(render.ReportSchemaError):
        render.load_report(bad)
    bad.write_text(json.dumps({**document, "task": "causal-lm"}), encoding="utf-8")
    with pytest.raises(render.ReportSchemaError, match="a causal-lm report; this renderer reads"):
        render.load_report(bad)


def test_every_task_finds_its_templates() -> None:
    from distill.tasks import TASK_NAMES, get_task

    for name in TASK_NAMES:
        templates = get_task(name).templates
        assert (templates / "report.html.j2").is_file(), name
        assert templates.parent == Path(get_task(name).module("render").__file__).parent


def test_rerender_asks_the_registry_for_the_reports_task(report_dir: Path, tmp_path: Path) -> None:
    from distill.report.reports import rerender

    paths = rerender(report_dir, tmp_path / "again")
    assert paths["html"].parent == tmp_path / "again"
    for name in ("report.html", "report.md", "accuracy_vs_size.svg"):
        assert (tmp_path / "again" / name).read_text(encoding="utf-8") == (
            report_dir / name
        ).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- schema 2 content


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def _reference_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written out plainly: bins (b/bins, (b+1)/bins]."""
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == labels
    ece = 0.0
    for b in range(bins):
        lower, upper = b / bins, (b + 1) / bins
        in_bin = (confidence > lower) & (confidence <= upper)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            ece += in_bin.mean() * gap
    return float(ece)


def test_ece_hand_computed() -> None:
    from distill.tasks.classification.report.scores import calibration

    # confidences 0.95, 0.95 (one right, one wrong), 0.55 (right), 0.75 (right):
    # 2/4 x |0.5 - 0.95| + 1/4 x |1 - 0.55| + 1/4 x |1 - 0.75| = 0.225 + 0.1125 + 0.0625
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.25, 0.75]])
    labels = np.array([0, 1, 1, 1])
    result = calibration(probabilities, labels)
    assert result["bins"] == 15 and len(result["reliability"]) == 15
    assert result["ece"] == pytest.approx(0.4)
    top = result["reliability"][14]
    assert (top["count"], top["accuracy"], top["confidence"]) == (2, 0.5, pytest.approx(0.95))
    assert sum(b["count"] for b in result["reliability"]) == 4
    assert result["reliability"][0]["accuracy"] is None  # empty bin
    # Perfectly calibrated: confidence 0.75 everywhere and 3 of 4 right.
    calibrated = calibration(np.array([[0.75, 0.25]] * 4), np.array([0, 0, 0, 1]))
    assert calibrated["ece"] == pytest.approx(0.0)
    # A confidence on a bin edge (0.8 = 12/15) belongs to the bin below, as on paper.
    edge = calibration(np.array([[0.8, 0.2]]), np.array([0]))
    assert edge["reliability"][11]["count"] == 1


def test_per_class_confusion_and_calibration_match_the_logits(
    upstream: dict[str, Any], document: dict[str, Any]
) -> None:
    from sklearn.metrics import confusion_matrix, f1_score

    labels = upstream["splits"]["test"].labels
    rows = _rows(document)
    for key in ROW_KEYS[:-1]:
        logits = upstream["logits"][key]
        predicted = logits.argmax(-1)
        f1 = f1_score(labels, predicted, average=None, labels=[0, 1])
        assert list(rows[key]["per_class_f1"]) == LABELS, key
        assert list(rows[key]["per_class_f1"].values()) == pytest.approx(list(f1)), key
        expected = confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
        assert rows[key]["confusion_matrix"] == expected, key
        calib = rows[key]["calibration"]
        assert calib["ece"] == pytest.approx(
            _reference_ece(_softmax(logits.astype(np.float64)), labels), abs=1e-6
        ), key
        assert sum(b["count"] for b in calib["reliability"]) == SPLIT_SIZES["test"]
    assert "calibration" in rows["tfidf"] and "confusion_matrix" in rows["tfidf"]
    assert sum(map(sum, rows["tfidf"]["confusion_matrix"])) == SPLIT_SIZES["test"]


def test_disagreements_of_the_deployed_student(
    upstream: dict[str, Any], document: dict[str, Any]
) -> None:
    test = upstream["splits"]["test"]
    teacher = upstream["logits"]["teacher"]
    int8 = upstream["logits"]["student_onnx_int8"]
    differ = np.flatnonzero(teacher.argmax(-1) != int8.argmax(-1))
    disagreements = document["disagreements"]
    assert disagreements["student"] == "student_onnx_int8"
    assert disagreements["reference"] == "teacher"
    assert disagreements["total"] == differ.size > 0
    assert sum(disagreements["by_category"].values()) == differ.size
    examples = disagreements["examples"]
    assert len(examples) == min(differ.size, 20)
    ids = {test.ids[i]: i for i in differ}
    order = {"student wrong": 0, "both wrong": 1, "teacher wrong": 2}
    assert [order[e["category"]] for e in examples] == sorted(
        order[e["category"]] for e in examples
    )
    for example in examples:
        i = ids[example["id"]]  # only examples where the two disagree
        assert example["text"] == test.texts[i]
        assert example["gold"] == LABELS[test.labels[i]]
        assert example["teacher"]["label"] == LABELS[teacher[i].argmax()]
        assert example["student"]["label"] == LABELS[int8[i].argmax()]
        assert example["teacher"]["probability"] == pytest.approx(
            _softmax(teacher[i].astype(np.float64)).max(), abs=1e-6
        )
        assert example["student"]["probability"] == pytest.approx(
            _softmax(int8[i].astype(np.float64)).max(), abs=1e-6
        )
        assert example["category"] == (
            "student wrong"
            if teacher[i].argmax() == test.labels[i]
            else ("teacher wrong" if int8[i].argmax() == test.labels[i] else "both wrong")
        )


def test_disagreements_are_capped_and_long_texts_cut() -> None:
    from distill.tasks.classification.report.disagreements import (
        MAX_TEXT_CHARS,
        find_disagreements,
    )

    n = 50
    split = Split(
        ids=[f"x{i}" for i in range(n)],
        texts=["word " * 200] * n,
        labels=np.zeros(n, dtype=np.int64),
    )
    teacher = np.tile([[2.0, 0.0]], (n, 1))
    student = np.tile([[0.0, 1.0]], (n, 1))
    student[:, 1] += np.linspace(0, 1, n)  # later rows are more confident
    result = find_disagreements(split, ["a", "b"], teacher, student, "student_onnx_int8", limit=5)
    assert result["total"] == n and len(result["examples"]) == 5
    assert result["by_category"] == {"student wrong": n, "both wrong": 0, "teacher wrong": 0}
    assert [e["id"] for e in result["examples"]] == ["x49", "x48", "x47", "x46", "x45"]
    first = result["examples"][0]
    assert first["text_truncated"] is True and len(first["text"]) == MAX_TEXT_CHARS + 1
    assert first["gold"] == "a" and first["teacher"]["label"] == "a"
    assert first["student"]["label"] == "b"


def test_size_breakdown(upstream: dict[str, Any], document: dict[str, Any]) -> None:
    from transformers import AutoModelForSequenceClassification

    rows = _rows(document)
    parts = {}
    for key in ("teacher", "student"):
        breakdown = rows[key]["size_breakdown"]
        assert breakdown["total_parameters"] == rows[key]["parameters"]
        parts[key] = {part["part"]: part for part in breakdown["parts"]}
        assert list(parts[key]) == ["embeddings", "encoder layers", "head"]
        assert sum(p["parameters"] for p in parts[key].values()) == rows[key]["parameters"]
        assert sum(p["share"] for p in parts[key].values()) == pytest.approx(1.0)
    model = AutoModelForSequenceClassification.from_pretrained(
        upstream["folders"]["student"] / "model"
    )
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    head = sum(p.numel() for p in model.bert.pooler.parameters()) + sum(
        p.numel() for p in model.classifier.parameters()
    )
    student = parts["student"]
    assert student["embeddings"]["parameters"] == embeddings
    assert student["encoder layers"]["parameters"] == 2 * layer
    assert (
        student["encoder layers"]["layers"] == 2 and student["encoder layers"]["per_layer"] == layer
    )
    assert student["head"]["parameters"] == head
    assert student["head"]["modules"] == ["bert.pooler", "classifier"]
    assert parts["teacher"]["encoder layers"]["parameters"] == 4 * layer
    assert parts["teacher"]["embeddings"]["parameters"] == embeddings


def test_markdown_tables_are_well_formed_and_texts_inert(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    lines = markdown.splitlines()
    tables: list[list[str]] = []
    for previous, line in zip(["", *lines], lines, strict=False):
        if line.startswith("|"):
            if not previous.startswith("|"):
                assert previous == "", f"a table must follow a blank line: {line}"
                tables.append([])
            tables[-1].append(line)
    assert len(tables) >= 10
    for table in tables:
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(widths) == 1, table
        assert re.fullmatch(r"\|( :?-+:? \|)+", table[1]), table[1]
    for link in ("accuracy_vs_latency.svg", "reliability.svg", "training_curves.svg"):
        assert f"]({link})" in markdown
    assert "## Where the deployed student and the teacher disagree" in markdown
    assert "## Calibration" in markdown and "## Where the parameters are" in markdown
    # The example texts: no raw HTML, no image or link syntax left.
    assert "<img" not in markdown and "![t](" not in markdown
    assert "!\\[t\\](//tracker.invalid/t.png) a\\|b \\`c\\`" in markdown


# --------------------------------------------------------------------------- the verdict


def test_kd_verdict_is_the_paired_test_of_the_two_students_test_predictions(
    upstream: dict[str, Any], document: dict[str, Any], report_dir: Path
) -> None:
    from math import comb

    labels = upstream["splits"]["test"].labels
    distilled = upstream["logits"]["student"].argmax(-1) == labels
    no_kd = upstream["logits"]["student_no_kd"].argmax(-1) == labels
    b, c = int((distilled & ~no_kd).sum()), int((~distilled & no_kd).sum())
    expected_p = min(1.0, 2 * sum(comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c))
    significance = document["distillation"]["significance"]
    assert (significance["only_first_correct"], significance["only_second_correct"]) == (b, c)
    assert significance["p_value"] == pytest.approx(expected_p)
    assert significance["accuracy_difference"] == pytest.approx(distilled.mean() - no_kd.mean())
    assert significance["ci_low"] <= significance["accuracy_difference"] <= significance["ci_high"]
    assert significance["resamples"] == 10_000 and significance["examples"] == SPLIT_SIZES["test"]
    assert significance["significant"] is (expected_p < 0.05)
    verdict = significance["verdict"]
    points = 100 * (distilled.mean() - no_kd.mean())
    assert verdict.startswith(f"Distillation gained {points:+.1f} points over the same student")
    for name in ("report.md", "report.html"):
        assert verdict in (report_dir / name).read_text(encoding="utf-8"), name


def test_kd_verdict_fields_for_a_constructed_pair_of_prediction_sets() -> None:
    from distill.tasks.classification.report.verdict import kd_significance

    labels = np.zeros(100, dtype=np.int64)
    # 80 both right, 8 right only when distilled, 2 right only without, 10 both wrong.
    distilled = np.r_[np.zeros(88), np.ones(12)].astype(int)
    no_kd = np.r_[np.zeros(80), np.ones(8), np.zeros(2), np.ones(10)].astype(int)
    result = kd_significance(np.eye(2)[distilled], np.eye(2)[no_kd], labels)
    assert result["p_value"] == 0.109375
    assert result["accuracy_difference"] == pytest.approx(0.06)
    assert result["significant"] is False
    assert result["verdict"].endswith("McNemar exact p = 0.109): not significant at the 5% level.")


@pytest.fixture(scope="module")
def pseudo_upstream(
    upstream: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The same upstream folders plus a pseudo-label twin (``student/pseudo/``, its test
    logits stored shuffled), as `baselines = ["no-kd", "pseudo-labels"]` leaves them."""
    root = tmp_path_factory.mktemp("report-pseudo-upstream")
    folders = {name: root / name for name in upstream["folders"]}
    for name, folder in upstream["folders"].items():
        shutil.copytree(folder, folders[name])
    test = upstream["splits"]["test"]
    twin = folders["student"] / "pseudo"
    shutil.copytree(folders["student"] / "baseline" / "model", twin / "model")
    (twin / "logits").mkdir()
    logits = _noisy_logits(test.labels, 0.75, seed=11)
    order = np.random.default_rng(12).permutation(len(test))
    save_logits(twin / "logits" / "test.npz", [test.ids[i] for i in order], logits[order])
    manifest = read_manifest(folders["student"])
    assert manifest is not None
    kept = {k: manifest[k] for k in ("stage", "config", "metrics", "wall_time_s")}
    write_manifest(folders["student"], kept)
    return {**upstream, "folders": folders, "logits": {**upstream["logits"], "pseudo": logits}}


def test_report_compares_the_distilled_student_with_its_pseudo_label_twin(
    pseudo_upstream: dict[str, Any], document: dict[str, Any], tmp_path: Path
) -> None:
    from distill.report.significance import mcnemar_exact

    metrics = run_report(pseudo_upstream, tmp_path / "out", tfidf_baseline=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    rows = _rows(report)
    labels = pseudo_upstream["splits"]["test"].labels
    logits = pseudo_upstream["logits"]
    row = rows["student_pseudo"]
    assert row["name"] == "Student, teacher's hard labels on the transfer text"
    assert row["accuracy"] == pytest.approx(
        classification_metrics(logits["pseudo"], labels, 2)["accuracy"]
    )
    # The second verdict is computed from the pseudo-label twin's own test predictions.
    distilled = logits["student"].argmax(-1) == labels
    pseudo = logits["pseudo"].argmax(-1) == labels
    b, c = int((distilled & ~pseudo).sum()), int((~distilled & pseudo).sum())
    soft = report["distillation"]["soft_target_significance"]
    assert (soft["only_first_correct"], soft["only_second_correct"]) == (b, c)
    assert soft["p_value"] == mcnemar_exact(b, c)
    assert soft["accuracy_difference"] == pytest.approx(distilled.mean() - pseudo.mean())
    assert report["distillation"]["accuracy_gain_over_pseudo_labels"] == pytest.approx(
        distilled.mean() - pseudo.mean()
    )
    points = 100 * (distilled.mean() - pseudo.mean())
    change = (
        f"gained {points:+.1f} points over" if points > 0 else f"lost {-points:.1f} points against"
    )
    assert soft["verdict"].startswith(
        f"Soft targets {change} the same student trained on the same labelled and transfer "
        "text with the teacher's hard labels (95% CI "
    )
    assert metrics["soft_target_significance"]["p_value"] == soft["p_value"]
    # The no-KD comparison is untouched by the second twin.
    assert report["distillation"]["significance"] == document["distillation"]["significance"]
    no_kd = logits["student_no_kd"].argmax(-1) == labels
    total, data, gain = (
        100 * (distilled.mean() - no_kd.mean()),
        100 * (pseudo.mean() - no_kd.mean()),
        100 * (distilled.mean() - pseudo.mean()),
    )
    decomposition = report["distillation"]["gain_decomposition"]
    assert decomposition == (
        f"Of the {total:+.1f} points the distilled student gained over its no-KD twin, "
        f"{data:+.1f} come with the transfer text itself (the teacher's hard labels on it, "
        f"over the labelled examples alone) and {gain:+.1f} from the soft targets (the "
        "distilled student over the pseudo-label twin, on the same examples)."
    )
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert f"**{soft['verdict']}** {decomposition}" in markdown
    assert "| Paired test of distilled vs pseudo-label student (test split) | Value |" in markdown
    assert (
        f"| right only with soft targets / only with the teacher's hard labels | {b} / {c} |"
        in markdown
    )
    assert "| Student, teacher's hard labels on the transfer text | pytorch fp32 |" in markdown
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="soft-target-verdict"' in html and 'id="soft-target-significance"' in html


def test_report_without_a_pseudo_label_twin_has_no_second_verdict(
    document: dict[str, Any], report_dir: Path
) -> None:
    assert "student_pseudo" not in _rows(document)
    distillation = document["distillation"]
    assert distillation["soft_target_significance"] is None
    assert distillation["accuracy_gain_over_pseudo_labels"] is None
    assert distillation["gain_decomposition"] is None
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "pseudo-label" not in markdown and "Soft targets" not in markdown


def test_teacher_onnx_rows_are_a_baseline_scored_from_their_own_predictions(
    upstream: dict[str, Any], document: dict[str, Any], report_dir: Path
) -> None:
    folder = upstream["folders"]["export"] / "teacher"
    labels = upstream["splits"]["test"].labels
    rows = _rows(document)
    teacher_labels = upstream["logits"]["teacher"].argmax(-1)
    for key, file, precision in (
        ("teacher_onnx_fp32", "model_fp32.onnx", "fp32"),
        ("teacher_onnx_int8", "model_int8.onnx", "int8 (dynamic)"),
    ):
        row = rows[key]
        predicted = upstream["logits"][key].argmax(-1)
        assert row["accuracy"] == pytest.approx(float((predicted == labels).mean())), key
        assert row["agreement"] == pytest.approx(float((predicted == teacher_labels).mean()))
        assert row["bytes"] == (folder / file).stat().st_size
        assert (row["precision"], row["deployed"]) == (precision, False)
        assert row["parameters"] == rows["teacher"]["parameters"]
    assert rows["teacher_onnx_int8"]["accuracy"] == pytest.approx(0.85, abs=0.1)
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "| Teacher ONNX int8 | onnxruntime int8 (dynamic) |" in markdown
    assert 'id="row-teacher_onnx_int8"' in (report_dir / "report.html").read_text("utf-8")


def test_headline_compares_the_deployed_student_with_the_quantized_teacher(
    document: dict[str, Any], report_dir: Path
) -> None:
    rows = _rows(document)
    deployed, quantized = rows["student_onnx_int8"], rows["teacher_onnx_int8"]
    versus = document["headline"]["vs_quantized_teacher"]
    assert versus["reference"] == "teacher_onnx_int8"
    assert versus["size_ratio"] == pytest.approx(quantized["bytes"] / deployed["bytes"])
    assert versus["speedup"] == pytest.approx(
        quantized["latency"]["p50_ms"] / deployed["latency"]["p50_ms"]
    )
    assert versus["accuracy_delta"] == pytest.approx(deployed["accuracy"] - quantized["accuracy"])
    assert document["headline"]["vs_teacher"]["size_ratio"] == pytest.approx(deployed["size_ratio"])
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    assert (
        f"Against the teacher quantized the same way (Teacher ONNX int8, "
        f"{100 * quantized['accuracy']:.2f}%"
    ) in markdown


def _with_floor(document: dict[str, Any], floor_accuracy: float) -> dict[str, Any]:
    """The report with the TF-IDF row at ``floor_accuracy`` and what follows from it."""
    import copy

    from distill.tasks.classification.report.floor import baseline_summary
    from distill.tasks.classification.report.verdict import headline

    changed = copy.deepcopy(document)
    next(r for r in changed["rows"] if r["key"] == "tfidf")["accuracy"] = floor_accuracy
    changed["baseline"] = baseline_summary(changed["rows"])
    changed["headline"] = headline(changed["rows"])
    return changed


def test_floor_warning_names_the_deployed_student_below_the_floor(document: dict[str, Any]) -> None:
    from distill.tasks.classification import render

    rows = _rows(document)
    deployed = rows["student_onnx_int8"]["accuracy"]  # 0.75; the teacher is at 0.90
    constructed = _with_floor(document, 0.80)
    sentence = (
        f"Warning: the deployed student (Student ONNX int8, {100 * deployed:.1f}%) is below "
        "the TF-IDF + logistic-regression floor (80.0%) on test accuracy."
    )
    assert constructed["headline"]["floor_warnings"] == [sentence]
    markdown = render.render_markdown(constructed)
    assert "> **Warning:** " + sentence.removeprefix("Warning: ") in markdown
    assert "Warning:** the teacher" not in markdown
    html = render.render_html(constructed)
    assert sentence.removeprefix("Warning: ") in html


def test_no_floor_warning_when_everything_beats_the_floor(document: dict[str, Any]) -> None:
    from distill.tasks.classification import render

    constructed = _with_floor(document, 0.5)
    assert constructed["headline"]["floor_warnings"] == []
    assert constructed["baseline"]["below_baseline"] == []
    assert "Warning" not in render.render_markdown(constructed)
    assert 'id="below-baseline"' not in render.render_html(constructed)


def test_floor_warning_for_the_teacher_too(document: dict[str, Any]) -> None:
    warnings = _with_floor(document, 0.95)["headline"]["floor_warnings"]
    assert warnings[0] == (
        "Warning: the teacher (90.0%) is below the TF-IDF + logistic-regression floor (95.0%) "
        "on test accuracy."
    )
    assert warnings[1].startswith("Warning: the deployed student (Student ONNX int8, 75.0%)")


def test_training_summary_states_the_budget_and_a_still_falling_validation_loss(
    document: dict[str, Any], report_dir: Path
) -> None:
    teacher = document["training"]["teacher"]["summary"]
    assert teacher["budget"] == "1 epochs x 10 steps/epoch = 10 steps (>= min_steps 0)"
    assert teacher["still_improving"]["last_eval_loss"] == 0.5
    assert "still_improving" not in document["training"]["student"]["summary"]
    sentence = "validation loss was still falling at the end"
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    assert f"**teacher: {sentence}** (0.6 → 0.5 at the last evaluation)" in markdown
    assert "raise `teacher.min_steps` or `teacher.epochs`" in markdown
    assert markdown.count(sentence) == 1
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert f"<strong>teacher: {sentence}</strong> (0.6 → 0.5 at the last evaluation)" in html


def test_a_still_falling_loss_under_the_recipes_own_budget_is_stated_not_advised(
    report_dir: Path, tmp_path: Path
) -> None:
    from distill.tasks.classification import render

    document = copy.deepcopy(render.load_report(report_dir / "report.json"))
    summary = document["training"]["teacher"]["summary"]
    summary["still_improving"]["budget_set_by"] = "teacher.epochs = 1"
    paths = render.write_reports(document, tmp_path)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert (
        "**teacher: validation loss was still falling at the end** of the budget the recipe "
        "sets (`teacher.epochs = 1`; 0.6 → 0.5 at the last evaluation)." in markdown
    )
    assert "raise `teacher" not in markdown
    html = paths["html"].read_text(encoding="utf-8")
    assert "of the budget the recipe sets (<code>teacher.epochs = 1</code>;" in html
    assert "raise <code>teacher" not in html
