"""The seq2seq report: the report stage run on a fake run (upstream manifests, test split,
weight files and graphs on disk; every model a fake decoder with known outputs), its rows,
speed, verdict and warnings, and the Markdown and HTML rendered from report.json; and a
hand-built minimal report (no twins, nothing timed) rendering too."""

from __future__ import annotations

import json
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
from seq2seq_models import build_tiny_t5

from distill.config import ReportConfig
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext, write_manifest
from distill.tasks.seq2seq import render
from distill.tasks.seq2seq.files import PairSplit, write_split
from distill.tasks.seq2seq.metrics import agreement, score_outputs
from distill.tasks.seq2seq.report import models
from distill.tasks.seq2seq.report.models import Decoder, DecodeSettings
from distill.tasks.seq2seq.report.speed import time_decoders
from distill.tasks.seq2seq.stages import report as stage
from distill.tasks.seq2seq.task import Seq2Seq

SOURCES = [f"source {i} words here" for i in range(8)]
TARGETS = [f"target {i} has some words w{i}" for i in range(8)]
WRONG = "completely different output"
# Each model's output per test source (the teacher's are the references themselves).
OUTPUTS = {
    "teacher": list(TARGETS),
    "student": [*TARGETS[:6], WRONG, TARGETS[7]],
    "student_no_kd": [*TARGETS[:3], WRONG, WRONG, WRONG, WRONG, TARGETS[7]],
    "student_sequence": list(TARGETS),  # the twin beats the distilled student: a warning
    "deployed": [*TARGETS[:6], WRONG, TARGETS[7]],
    "teacher_onnx_int8": list(TARGETS),
}
PARAMETERS = {"teacher": 1000, "student": 400, "student_no_kd": 400, "student_sequence": 400}
SIZES = {"teacher": 4000, "student": 1600, "student_no_kd": 1600, "student_sequence": 1600}


def fake_decoder(key: str, name: str, runtime: str, precision: str) -> Decoder:
    by_source = dict(zip(SOURCES, OUTPUTS[key], strict=True))

    def decode(sources: list[str], batch_size: int) -> list[str]:
        assert batch_size >= 1
        return [by_source[s] for s in sources]

    return Decoder(
        key, name, decode, lambda text: len(text.split()), runtime, precision, PARAMETERS.get(key)
    )


def _manifest(folder: Path, stage_name: str, **payload: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, {"stage": stage_name, "wall_time_s": 1.5, **payload})


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def fake_run(root: Path) -> dict[str, Path]:
    """Upstream folders as the stages leave them (manifests, test split, model files)."""
    inputs = {name: root / name for name in ("data", "teacher", "student", "export")}
    write_split(
        inputs["data"] / "test.jsonl", PairSplit([f"t{i}" for i in range(8)], SOURCES, TARGETS)
    )
    data_config = {"data": {"source_prefix": "", "max_length": 32, "max_target_length": 12}}
    _manifest(inputs["data"], "data", config=data_config, metrics={"test": 8})
    _write(inputs["teacher"] / "model" / "model.safetensors", SIZES["teacher"])
    _manifest(inputs["teacher"], "teacher", metrics={"steps": 10, "train_runtime_s": 2.0})
    for folder in ("model", "baseline/model", "sequence/model"):
        _write(inputs["student"] / folder / "model.safetensors", SIZES["student"])
    _manifest(inputs["student"], "student", metrics={"steps": 20})
    for folder, size in (("bundle", 300), ("teacher/int8", 900)):
        for graph in ("encoder.onnx", "decoder.onnx"):
            _write(inputs["export"] / folder / graph, size)
    export_metrics = {"deployed": "int8", "fp32_bleu": 71.5, "int8_bleu": 70.9, "int8_bytes": 600}
    _manifest(inputs["export"], "export", metrics=export_metrics)
    return inputs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report stage run once on the fake run, its decoders faked."""
    root = tmp_path_factory.mktemp("s2s-run")
    inputs = fake_run(root)
    loaded: list[tuple[str, Path]] = []

    def torch_decoder(key: str, name: str, folder: Path, settings: DecodeSettings) -> Decoder:
        assert settings == DecodeSettings(prefix="", max_length=32, max_new_tokens=12, num_beams=2)
        loaded.append((key, folder))
        return fake_decoder(key, name, "pytorch", "fp32")

    def bundle_decoder(key: str, name: str, *args: Any) -> Decoder:
        return fake_decoder(key, name, "onnxruntime", "int8")

    def onnx_decoder(key: str, name: str, *args: Any) -> Decoder:
        return fake_decoder(key, name, "onnxruntime", "int8")

    config = ReportConfig(latency_runs=3, latency_warmup=0, num_beams=2, examples=4)
    ctx = RunContext(name="s2s-test", seed=0, task="seq2seq", workdir=root, recipe_dir=root)
    out = root / "report"
    out.mkdir()  # the pipeline hands the stage its (staging) folder
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stage, "torch_decoder", torch_decoder)
        patch.setattr(stage, "bundle_decoder", bundle_decoder)
        patch.setattr(stage, "onnx_decoder", onnx_decoder)
        metrics = stage.run(ctx, inputs, out, report=config)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"metrics": metrics, "report": report, "out": out, "loaded": loaded}


def test_rows_scored_on_the_references(built: dict[str, Any]) -> None:
    report = built["report"]
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == list(OUTPUTS)
    assert [key for key, _ in built["loaded"]] == list(PARAMETERS)
    for key, outputs in OUTPUTS.items():
        expected = score_outputs(outputs, TARGETS)
        assert rows[key]["scores"]["bleu"] == pytest.approx(expected["bleu"])
        assert rows[key]["scores"]["rougeL"] == pytest.approx(expected["rougeL"])
    assert rows["teacher"]["scores"]["bleu"] == pytest.approx(100)
    assert rows["student"]["scores"]["exact_match"] == pytest.approx(7 / 8)
    assert rows["teacher"]["agreement"] is None
    assert rows["student_no_kd"]["agreement"] == agreement(OUTPUTS["student_no_kd"], TARGETS)
    assert rows["student_no_kd"]["agreement"]["identical"] == pytest.approx(4 / 8)
    # Sizes from the files; the graphs take the parameters of the model they came from.
    assert rows["teacher"]["bytes"] == 4000 and rows["deployed"]["bytes"] == 600
    assert rows["teacher_onnx_int8"]["bytes"] == 1800
    assert rows["deployed"]["parameters"] == 400
    assert rows["teacher_onnx_int8"]["parameters"] == 1000
    assert rows["deployed"]["deployed"] and not rows["student"]["deployed"]
    assert rows["deployed"]["size_ratio"] == pytest.approx(4000 / 600)
    assert rows["student"]["bleu_kept"] == pytest.approx(rows["student"]["scores"]["bleu"] / 100)
    assert report["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


def test_speed_of_the_timed_rows(built: dict[str, Any]) -> None:
    rows = {row["key"]: row for row in built["report"]["rows"]}
    for key in ("student_no_kd", "student_sequence"):
        assert rows[key]["latency"] is None
    for key in ("teacher", "student", "deployed", "teacher_onnx_int8"):
        latency = rows[key]["latency"]
        assert latency["batch_1"]["sources"] == 4 and latency["batch_32"]["sources"] == 32
        assert latency["batch_1_ms"] == pytest.approx(latency["batch_1"]["p50_ms"] / 4)
        assert latency["batch_32"]["runs"] == 3
    # Output tokens (words here) of the sources each call decodes: 32 = the 8 cycled 4 times.
    words = [len(text.split()) for text in OUTPUTS["student"]]
    assert rows["student"]["latency"]["batch_1"]["output_tokens"] == sum(words[:4])
    assert rows["student"]["latency"]["batch_32"]["output_tokens"] == 4 * sum(words)
    setup = built["report"]["speed_setup"]
    assert setup["batch_sizes"] == [1, 32] and setup["num_beams"] == 2
    assert setup["timed"] == ["teacher", "student", "deployed", "teacher_onnx_int8"]


def test_verdict_and_warnings(built: dict[str, Any]) -> None:
    report = built["report"]
    kd = report["distillation"]["kd"]
    student = score_outputs(OUTPUTS["student"], TARGETS)["bleu"]
    no_kd = score_outputs(OUTPUTS["student_no_kd"], TARGETS)["bleu"]
    assert kd["bleu_difference"] == pytest.approx(student - no_kd)
    assert kd["verdict"].startswith(f"Distillation gained +{student - no_kd:.1f} BLEU points")
    assert "paired bootstrap (one-sided)" in kd["verdict"]
    assert report["headline"]["verdict"] == kd["verdict"]
    assert report["distillation"]["soft_targets"]["bleu_difference"] < 0
    warnings = " ".join(report["headline"]["warnings"])
    assert "Teacher ONNX int8" in warnings and "translates better" in warnings
    assert "not better than its sequence-level twin" in warnings
    assert "no-KD twin" not in warnings
    metrics = built["metrics"]
    assert metrics["deployed"] == "deployed"
    assert metrics["kd_gain_bleu"] == pytest.approx(student - no_kd)
    assert metrics["rows"]["teacher"]["bleu"] == pytest.approx(100)
    assert report["export"]["values"]["int8_bleu"] == 70.9
    assert report["export"]["deployed"] == "int8"
    assert "sacrebleu" in report["versions"]


def test_examples_side_by_side(built: dict[str, Any]) -> None:
    examples = built["report"]["examples"]
    assert [e["id"] for e in examples] == ["t0", "t1", "t2", "t3"]
    assert [o["key"] for o in examples[0]["outputs"]] == list(OUTPUTS)
    third = {o["key"]: o for o in examples[2]["outputs"]}
    assert third["student"]["exact"] and third["student"]["text"] == TARGETS[2]
    fourth = {o["key"]: o for o in examples[3]["outputs"]}
    assert fourth["student_no_kd"]["text"] == WRONG and not fourth["student_no_kd"]["exact"]
    assert built["report"]["headline"]["summary"].startswith("The deployed student keeps")


class _Tags(HTMLParser):
    """Checks the page's tags nest properly (void elements excepted)."""

    VOID: ClassVar[set[str]] = {"meta", "br", "img", "hr", "input", "link", "path", "rect"}
    VOID |= {"line", "use", "circle"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def _check_html(text: str) -> None:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    assert parser.open == []


def test_rendered_markdown_and_html(built: dict[str, Any]) -> None:
    out, report = built["out"], built["report"]
    markdown = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    for row in report["rows"]:
        assert f"| {row['name']} |" in markdown
        assert f'id="row-{row["key"]}"' in html
    assert report["distillation"]["kd"]["verdict"] in markdown
    assert "### t0" in markdown and f"| Source | {SOURCES[0]} |" in markdown
    assert f"| Student without KD | {WRONG} |" in markdown  # t3: the twin's wrong output
    assert markdown.count("| Reference |") == 4
    assert "![BLEU vs size](bleu_vs_size.svg)" in markdown
    assert (out / "bleu_vs_size.svg").read_text(encoding="utf-8").startswith("<?xml")
    assert "<svg" in html and 'id="example-4"' in html
    _check_html(html)
    assert render.load_report(out / "report.json")["run"] == "s2s-test"
    lines = Seq2Seq().summary_lines(report)
    assert lines[1].split()[0] == "Teacher" and "100.00" in lines[1]


def test_minimal_hand_built_report_renders(tmp_path: Path) -> None:
    """No twins, no teacher int8, nothing timed, no examples: every section still renders."""
    rows = [
        {
            "key": key,
            "name": name,
            "runtime": "pytorch",
            "precision": "fp32",
            "deployed": key == "deployed",
            "parameters": None,
            "bytes": size,
            "weight_files": ["model.safetensors"],
            "scores": score_outputs(["a b <c> d"], ["a b <c> d"]),
            "agreement": None,
            "latency": None,
        }
        for key, name, size in (("teacher", "Teacher", 10), ("deployed", "Student <int8>", 5))
    ]
    document = {
        "schema_version": render.SCHEMA_VERSION,
        "task": "seq2seq",
        "run": "minimal",
        "created": "2026-01-01T00:00:00+0000",
        "rows": rows,
        "headline": {"summary": "The deployed student.", "verdict": None, "warnings": []},
        "distillation": {"kd": None, "soft_targets": None},
        "signatures": {"bleu": "nrefs:1", "chrf": "nc:6", "rouge": "rouge_score"},
        "decoding": {"num_beams": 4, "max_new_tokens": 8, "test_sources": 1},
        "examples": [],
        "export": {"deployed": "fp32", "values": {}},
        "speed_setup": {"batch_sizes": [1, 32], "timed": [], "runs": 0, "warmup": 0},
        "training": {},
        "recipe": {},
        "wall_time_s": {},
        "versions": {},
        "hardware": {"cpu": "x", "logical_cores": 2, "available_cores": 2},
        "notes": ["a <note>"],
    }
    document["speed_setup"].update(
        rounds=0, threads=1, inputs="-", torch="-", onnxruntime="-", max_new_tokens=8
    )
    (tmp_path / "report.json").write_text(json.dumps(document), encoding="utf-8")
    paths = render.write_reports(render.load_report(tmp_path / "report.json"), tmp_path)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    html = paths["html"].read_text(encoding="utf-8")
    assert "| Teacher |" in markdown and "| Student &lt;int8&gt; |" in markdown
    assert "with beam search (4 beams)" in markdown
    assert "## Distillation" not in markdown and "## Examples" not in markdown
    assert "Student &lt;int8&gt;" in html and "a &lt;note&gt;" in html
    _check_html(html)


def test_load_report_checks_the_task(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"task": "causal-lm", "schema_version": 1}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="not a seq2seq report"):
        render.load_report(path)


def test_time_decoders_refuses_no_sources() -> None:
    config = ReportConfig(latency_runs=3, latency_warmup=0)
    with pytest.raises(ValueError, match="no test sources"):
        time_decoders([fake_decoder("teacher", "Teacher", "pytorch", "fp32")], [], config, 3, 0)


def test_decoders_glue_on_a_tiny_t5(tmp_path: Path) -> None:
    """The PyTorch and ONNX decoders on a saved tiny T5, the generation modules stubbed: what
    they pass on (prefix, lengths, beams, batches), parameters counted, tokens counted."""
    folder = build_tiny_t5(tmp_path / "t5", ["a", "b", "c", "d"])
    settings = DecodeSettings(prefix="a ", max_length=3, max_new_tokens=5, num_beams=3)
    calls: list[Any] = []

    def generate_texts(model: Any, tokenizer: Any, sources: list[str], **kw: Any) -> list[str]:
        calls.append(("torch", sources, kw))
        return ["b c" for _ in sources]

    class OnnxSeq2Seq:
        @staticmethod
        def load(path: Path, *, threads: int | None = None) -> str:
            calls.append(("load", path, threads))
            return "graphs"

    def generate_ids(model: Any, sources: list[list[int]], **kw: Any) -> list[list[int]]:
        calls.append(("onnx", sources, kw))
        return [[0, 5, 6, 1] for _ in sources]  # start, "b", "c", EOS

    stubs = {
        "distill.tasks.seq2seq.generation": {"generate_texts": generate_texts},
        "distill.tasks.seq2seq.onnx_model": {"OnnxSeq2Seq": OnnxSeq2Seq},
        "distill.tasks.seq2seq.decoding": {"generate_ids": generate_ids},
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, attributes in stubs.items():
            module = types.ModuleType(name)
            for attribute, value in attributes.items():
                setattr(module, attribute, value)
            patch.setitem(sys.modules, name, module)
        torch_model = models.torch_decoder("teacher", "Teacher", folder, settings)
        onnx_model = models.onnx_decoder(
            "teacher_onnx_int8", "Teacher ONNX int8", tmp_path / "int8", folder, settings, 2, "int8"
        )
        assert torch_model.decode(["b", "c d"], 16) == ["b c", "b c"]
        assert onnx_model.decode(["b", "c d", "d"], 2) == ["b c", "b c", "b c"]
    assert calls[0] == ("load", tmp_path / "int8", 2)
    assert calls[1] == (
        "torch",
        ["b", "c d"],
        {"prefix": "a ", "max_length": 3, "max_new_tokens": 5, "num_beams": 3, "batch_size": 16},
    )
    # Prefix in front, cut to 3 tokens (EOS kept), batches of 2; "a"=4, "b"=5, "c"=6, "d"=7.
    assert calls[2] == ("onnx", [[4, 5, 1], [4, 6, 1]], {"num_beams": 3, "max_new_tokens": 5})
    assert calls[3] == ("onnx", [[4, 7, 1]], {"num_beams": 3, "max_new_tokens": 5})
    assert torch_model.parameters and torch_model.parameters > 1000
    assert torch_model.runtime == "pytorch" and onnx_model.precision == "int8"
    assert torch_model.count_tokens("b c d") == 3 and onnx_model.count_tokens("") == 0
