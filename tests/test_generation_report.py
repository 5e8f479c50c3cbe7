"""The causal-LM report stage on fake upstream folders: tiny real Llamas, real ONNX files
(fp32 and int8), perplexities written into the manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from generation_helpers import (
    WORDS,
    exported_tiny_llama,
    save_tiny_llama,
    tiny_llama,
    tiny_tokenizer,
)

from distill.config import ReportConfig
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext, read_manifest, write_manifest
from distill.tasks.causal_lm import render as generation_render
from distill.tasks.causal_lm.files import TextSplit, read_split, write_split
from distill.tasks.causal_lm.generate import generate
from distill.tasks.causal_lm.stages import report as generation_report

INJECTION = "<script>alert(1)</script>"
CONFIG = ReportConfig(
    latency_threads=1, latency_runs=3, latency_warmup=1, samples=2, max_new_tokens=4
)
PERPLEXITY = {"teacher": 11.5, "student": 14.25, "no_kd": 17.0, "fp32": 14.26, "int8": 14.9}


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS[:60], size=10 + i % 5)) for i in range(n)]


# What the student stage records of a student chosen by measured importance.
BUILT = {
    "init": "teacher-layers",
    "teacher_layers": [0, 3],
    "layer_selection": "importance",
    "calibration_texts": 8,
    "calibration_tokens": 80,
    "block_influence": [0.5, 0.125, 0.0625, 0.25],
    "width_calibration_tokens": 80,
    "mlp": {"fraction": 0.5, "neurons_kept": 32, "neurons_per_layer": 64, "score_kept": [0.9]},
}
BEFORE = {"validation": {"perplexity": 95.5, "tokens": 99}, "test": {"perplexity": 97.25}}


def build_upstream(
    root: Path,
    exported: tuple[Path, Path],
    *,
    int8: bool,
    baseline: bool,
    selection: bool = True,
    teacher_baseline: bool = False,
) -> dict:
    """data/teacher/student/export stage folders as the causal-lm stages write them;
    ``selection = False``: a student manifest from before the stage recorded its selection;
    ``teacher_baseline``: the teacher really exported to ONNX fp32 and int8 by the export
    stage's :func:`export_teacher` (else the metrics say the key was false)."""
    student_source, onnx_dir = exported
    data = root / "data"
    data.mkdir(parents=True)
    for name, n in {"train": 12, "validation": 4, "test": 5}.items():
        texts = _texts(n, seed=len(name))
        if name == "test":
            texts[0] = f"{INJECTION} & {texts[0]}"
        split = TextSplit([f"{name}-{i}" for i in range(n)], texts)
        write_split(data / f"{name}.jsonl", split)
    write_manifest(data, {"stage": "data", "wall_time_s": 0.5, "metrics": {}})

    teacher = root / "teacher"
    (teacher / "model").mkdir(parents=True)
    tiny_llama(seed=5, layers=4).save_pretrained(teacher / "model")
    tiny_tokenizer().save_pretrained(teacher / "model")
    write_manifest(
        teacher,
        {
            "stage": "teacher",
            "wall_time_s": 2.0,
            "metrics": {
                "test": {"perplexity": PERPLEXITY["teacher"], "nll": 2.44, "tokens": 321},
                "validation": {"perplexity": 12.0, "nll": 2.48, "tokens": 99},
                "parameters": {"total": 1, "trainable": 1},
            },
        },
    )

    student = root / "student"
    shutil.copytree(student_source, student / "model")
    metrics: dict[str, Any] = {
        "test": {"perplexity": PERPLEXITY["student"], "nll": 2.66, "tokens": 321},
        "parameters": {"total": 1, "trainable": 1},
        "built": BUILT if selection else {"layers": [0, 3]},
        "divergence": "reverse_kl",
        "teacher_outputs": "top-k",
        "top_k": 16,
    }
    if selection:
        metrics["before_training"] = BEFORE
    if baseline:
        save_tiny_llama(student / "baseline" / "model", seed=2)
        metrics["baseline"] = {
            "test": {"perplexity": PERPLEXITY["no_kd"], "nll": 2.83, "tokens": 321},
            "parameters": {"total": 1, "trainable": 1},
        }
    write_manifest(
        student,
        {
            "stage": "student",
            "wall_time_s": 3.0,
            "metrics": metrics,
            "config": {
                "student": {
                    "temperature": 2.0,
                    "alpha": 0.5,
                    "num_layers": 2,
                    **({"layer_selection": "importance", "mlp_keep": 0.5} if selection else {}),
                }
            },
        },
    )

    export = root / "export"
    bundle = export / "bundle"
    shutil.copytree(onnx_dir, bundle)
    fp32_bytes = (bundle / "model.onnx").stat().st_size
    int8_bytes = None
    if int8:
        from distill.tasks.causal_lm.int8 import quantize_int8

        (bundle / "fp32").mkdir()
        shutil.move(bundle / "model.onnx", bundle / "fp32" / "model.onnx")
        quantized = quantize_int8(bundle / "fp32" / "model.onnx", root / "quantized")
        shutil.move(quantized, bundle / "model.onnx")
        int8_bytes = (bundle / "model.onnx").stat().st_size
    teacher_onnx: dict[str, Any] = {"skipped": "export.teacher_baseline = false"}
    if teacher_baseline:
        from distill.config import ExportConfig
        from distill.tasks.causal_lm.stages.export import export_teacher
        from distill.tasks.causal_lm.training import encode_texts

        tokenizer = tiny_tokenizer()
        sequences = encode_texts(tokenizer, read_split(data, "test"), 24)
        teacher_onnx = export_teacher(
            teacher / "model",
            sequences,
            export / "teacher",
            ExportConfig(parity_tolerance=1e-3, quantization="dynamic" if int8 else "none"),
        )
    write_manifest(
        export,
        {
            "stage": "export",
            "wall_time_s": 4.0,
            "metrics": {
                "fp32_perplexity": PERPLEXITY["fp32"],
                "int8_perplexity": PERPLEXITY["int8"] if int8 else None,
                "parity_max_abs_diff": 1.5e-5,
                "fp32_bytes": fp32_bytes,
                "int8_bytes": int8_bytes,
                "deployed": "int8" if int8 else "fp32",
                "quantization": "dynamic" if int8 else "none",
                "teacher_baseline": teacher_onnx,
            },
        },
    )
    return {"data": data, "teacher": teacher, "student": student, "export": export}


def _run(root: Path, inputs: dict[str, Path]) -> tuple[dict, dict, Path]:
    out = root / "report"
    out.mkdir()
    ctx = RunContext(name="tiny-lm", seed=0, task="causal-lm", workdir=root, recipe_dir=root)
    metrics = generation_report.run(ctx, inputs, out, report=CONFIG)
    return metrics, json.loads((out / "report.json").read_text(encoding="utf-8")), out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    return exported_tiny_llama(tmp_path_factory)


@pytest.fixture(scope="module")
def full(tmp_path_factory, exported) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gen-report")
    inputs = build_upstream(root, exported, int8=True, baseline=True, teacher_baseline=True)
    metrics, document, out = _run(root, inputs)
    return {"inputs": inputs, "metrics": metrics, "report": document, "out": out}


def test_rows_copy_perplexities_and_measure_files(full) -> None:
    report, inputs = full["report"], full["inputs"]
    assert report["task"] == "causal-lm"
    assert report["schema_version"] == generation_render.SCHEMA_VERSION
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == [
        "teacher",
        "student",
        "student_no_kd",
        "student_onnx_fp32",
        "student_onnx_int8",
        "teacher_onnx_fp32",
        "teacher_onnx_int8",
    ]
    baseline = read_manifest(inputs["export"])["metrics"]["teacher_baseline"]
    expected = {
        "teacher": PERPLEXITY["teacher"],
        "student": PERPLEXITY["student"],
        "student_no_kd": PERPLEXITY["no_kd"],
        "student_onnx_fp32": PERPLEXITY["fp32"],
        "student_onnx_int8": PERPLEXITY["int8"],
        "teacher_onnx_fp32": baseline["fp32_perplexity"],
        "teacher_onnx_int8": baseline["int8_perplexity"],
    }
    assert {key: row["perplexity"] for key, row in rows.items()} == expected
    assert rows["teacher"]["validation_perplexity"] == 12.0

    def weights(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.glob("*.safetensors"))

    bundle = inputs["export"] / "bundle"
    assert rows["teacher"]["bytes"] == weights(inputs["teacher"] / "model")
    assert rows["student"]["bytes"] == weights(inputs["student"] / "model")
    assert rows["student_no_kd"]["bytes"] == weights(inputs["student"] / "baseline" / "model")
    assert rows["student_onnx_fp32"]["bytes"] == (bundle / "fp32" / "model.onnx").stat().st_size
    assert rows["student_onnx_int8"]["bytes"] == (bundle / "model.onnx").stat().st_size
    assert rows["student_onnx_int8"]["deployed"] and report["deployed"] == "student_onnx_int8"
    assert [row["key"] for row in report["rows"] if row["deployed"]] == ["student_onnx_int8"]
    # Counted on the loaded models (the 4-layer teacher is bigger than the 2-layer student).
    assert rows["teacher"]["parameters"] > rows["student"]["parameters"] > 0
    assert rows["student_onnx_int8"]["parameters"] == rows["student"]["parameters"]
    assert rows["student_no_kd"]["parameters"] == rows["student"]["parameters"]
    teacher = rows["teacher"]
    for row in rows.values():
        assert row["size_ratio"] == pytest.approx(teacher["bytes"] / row["bytes"])
        assert row["perplexity_ratio"] == pytest.approx(row["perplexity"] / teacher["perplexity"])
    assert report["distillation"]["perplexity_gain_over_no_kd"] == pytest.approx(
        PERPLEXITY["no_kd"] - PERPLEXITY["student"]
    )
    settings = report["distillation"]["settings"]
    assert settings["divergence"] == "reverse_kl" and settings["top_k"] == 16
    assert settings["temperature"] == 2.0 and settings["alpha"] == 0.5
    assert "jsd_beta" not in settings
    assert report["export"]["parity_max_abs_diff"] == 1.5e-5
    assert report["wall_time_s"]["teacher"] == 2.0 and report["wall_time_s"]["report"] > 0
    assert report["data"]["splits"]["test"]["examples"] == 5
    assert report["data"]["test_tokens_scored"] == 321


def test_tokens_per_second_are_measured_and_compared_with_the_teacher(full) -> None:
    rows = {row["key"]: row for row in full["report"]["rows"]}
    teacher_rate = rows["teacher"]["speed"]["tokens_per_s"]
    for key in (
        "teacher",
        "student",
        "student_onnx_fp32",
        "student_onnx_int8",
        "teacher_onnx_fp32",
        "teacher_onnx_int8",
    ):
        speed = rows[key]["speed"]
        assert speed["tokens_per_s"] > 0 and speed["runs"] == 3
        assert speed["new_tokens_per_run"] == CONFIG.max_new_tokens  # EOS ignored
        assert speed["tokens_per_s_min"] <= speed["tokens_per_s"] <= speed["tokens_per_s_max"]
        assert rows[key]["speedup"] == pytest.approx(speed["tokens_per_s"] / teacher_rate)
    assert rows["student_no_kd"]["speed"] is None and rows["student_no_kd"]["speedup"] is None
    setup = full["report"]["speed_setup"]
    assert (setup["threads"], setup["runs"], setup["max_new_tokens"]) == (1, 3, 4)
    metrics = full["metrics"]
    assert metrics["deployed"] == "student_onnx_int8"
    assert metrics["rows"]["student_onnx_int8"]["tokens_per_s"] == pytest.approx(
        rows["student_onnx_int8"]["speed"]["tokens_per_s"]
    )
    assert metrics["rows"]["teacher"]["perplexity"] == PERPLEXITY["teacher"]


def test_the_teacher_onnx_rows_hold_real_numbers(full) -> None:
    """The teacher exported through the student's path: real files, perplexities measured
    with onnxruntime (fp32 equal to PyTorch's on the same tokens), timed beside the student,
    and the headline ratios stated against the PyTorch teacher and the teacher's int8 ONNX."""
    import torch

    from distill.tasks.causal_lm.training import encode_texts, load_causal_lm, perplexity

    report, inputs = full["report"], full["inputs"]
    export = inputs["export"]
    baseline = read_manifest(export)["metrics"]["teacher_baseline"]
    assert baseline["fp32_model"] == "teacher/model.onnx"
    assert max(baseline["parity_differences"].values()) <= 1e-3
    rows = {row["key"]: row for row in report["rows"]}
    fp32, int8 = rows["teacher_onnx_fp32"], rows["teacher_onnx_int8"]
    assert fp32["bytes"] == (export / "teacher" / "model.onnx").stat().st_size
    assert int8["bytes"] == (export / baseline["int8_model"]).stat().st_size < fp32["bytes"]
    assert fp32["parameters"] == int8["parameters"] == rows["teacher"]["parameters"]
    assert not fp32["deployed"] and not int8["deployed"]
    # The fp32 graph scores what the PyTorch teacher scores on the same tokens.
    tokenizer = tiny_tokenizer()
    sequences = encode_texts(tokenizer, read_split(inputs["data"], "test"), 24)
    with torch.no_grad():
        torch_ppl = perplexity(load_causal_lm(inputs["teacher"] / "model", "t"), sequences, 0)
    assert fp32["perplexity"] == pytest.approx(torch_ppl["perplexity"], rel=1e-4)
    assert int8["perplexity"] > 0 and int8["perplexity"] != fp32["perplexity"]
    deployed = rows["student_onnx_int8"]
    headline = report["headline"]
    assert set(headline) == {"teacher", "teacher_onnx_int8", "teacher_onnx_fp32"}
    own = headline["teacher_onnx_int8"]
    assert own["size_ratio"] == pytest.approx(int8["bytes"] / deployed["bytes"])
    assert own["speedup"] == pytest.approx(
        deployed["speed"]["tokens_per_s"] / int8["speed"]["tokens_per_s"]
    )
    assert headline["teacher"]["speedup"] == pytest.approx(deployed["speedup"])
    markdown = (full["out"] / "report.md").read_text(encoding="utf-8")
    assert "Against the teacher's own int8 ONNX" in markdown
    assert "Teacher ONNX int8" in markdown


def test_export_tables_name_the_int8_pass(full) -> None:
    assert full["report"]["export"]["quantization"] == "dynamic"
    markdown = (full["out"] / "report.md").read_text(encoding="utf-8")
    html = (full["out"] / "report.html").read_text(encoding="utf-8")
    line = (
        "dynamic: int8 weight matmuls, activations quantized at run time; the token-embedding "
        "table in int8 where the graph gathers from one"
    )
    assert f"| int8 pass | {line} |" in markdown
    assert f"<tr><th>int8 pass</th><td>{line}</td></tr>" in html


def test_samples_continue_the_first_test_prompts(full) -> None:
    samples = full["report"]["samples"]
    bundle = full["inputs"]["export"] / "bundle"
    assert [s["id"] for s in samples] == ["test-0", "test-1"]
    for sample in samples:
        assert [c["key"] for c in sample["continuations"]] == [
            "teacher",
            "student",
            "student_no_kd",
            "student_onnx_int8",
        ]
        by_key = {c["key"]: c for c in sample["continuations"]}
        deployed = generate(bundle, sample["prompt"], max_new_tokens=CONFIG.max_new_tokens)
        assert by_key["student_onnx_int8"]["text"] == deployed.text
        assert by_key["student_onnx_int8"]["tokens"] == len(deployed.token_ids)
        # The PyTorch student has the fp32 export's weights: the same greedy continuation.
        fp32 = generate(
            bundle,
            sample["prompt"],
            max_new_tokens=CONFIG.max_new_tokens,
            file_name="fp32/model.onnx",
        )
        assert by_key["student"]["text"] == fp32.text
        assert all(0 < c["tokens"] <= CONFIG.max_new_tokens for c in by_key.values())
    first = samples[0]
    words = full["report"]["samples"][0]["prompt"].split() + first["reference"].split()
    assert words[0] == INJECTION
    assert len(first["prompt"].split()) == len(words) // 2


def test_markdown_html_and_plot_are_written_and_escaped(full, tmp_path) -> None:
    out = full["out"]
    html = (out / "report.html").read_text(encoding="utf-8")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert (out / generation_render.PLOT_FILE).read_text(encoding="utf-8").startswith("<?xml")
    assert INJECTION not in html and INJECTION not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "<script" not in html.lower()  # no scripts at all: the page works offline
    assert "<svg" in html and "http://" not in html.split("<svg")[0]
    rows = {row["key"]: row for row in full["report"]["rows"]}
    deployed, teacher = rows["student_onnx_int8"], rows["teacher"]
    times = generation_render.fmt_times
    headline = (
        f"{times(deployed['size_ratio'], 'smaller', 'larger')} and "
        f"{times(deployed['speedup'], 'faster', 'slower')} (tokens/s"
    )
    assert headline in html and headline in markdown
    assert (
        f"test perplexity {PERPLEXITY['int8']:.4g} vs the teacher's {teacher['perplexity']:.4g}"
        in markdown
    )
    assert f"![Perplexity vs size]({generation_render.PLOT_FILE})" in markdown
    for row in rows.values():
        assert f'id="row-{row["key"]}"' in html
    # Re-rendering from the JSON alone gives the same page.
    report = generation_render.load_report(out / "report.json")
    assert generation_render.render_markdown(report) == markdown
    # The registry finds the report's task and its renderer.
    from distill.report.reports import rerender

    again = rerender(out / "report.json", tmp_path / "again")
    assert again["html"].read_text(encoding="utf-8") == html
    assert again["markdown"].read_text(encoding="utf-8") == markdown


def test_the_selection_and_before_training_perplexity_are_reported(full) -> None:
    selection = full["report"]["distillation"]["selection"]
    assert selection["layer_selection"] == "importance" and selection["teacher_layers"] == [0, 3]
    assert selection["block_influence"] == BUILT["block_influence"]
    assert selection["mlp"]["neurons_kept"] == 32 and selection["heads"] is None
    assert selection["perplexity"]["test"] == {
        "before_training": 97.25,
        "after_training": PERPLEXITY["student"],
        "teacher": PERPLEXITY["teacher"],
    }
    settings = full["report"]["distillation"]["settings"]
    assert settings["layer_selection"] == "importance" and settings["mlp_keep"] == 0.5
    assert "heads_keep" not in settings  # left at its default
    markdown = (full["out"] / "report.md").read_text(encoding="utf-8")
    html = (full["out"] / "report.html").read_text(encoding="utf-8")
    assert "Teacher layers kept (importance): 0, 3." in markdown
    assert "MLP neurons kept: 32 of 64 per layer" in markdown
    assert "0: **0.5**, 1: 0.125, 2: 0.0625, 3: **0.25**." in markdown
    assert (
        f"| test | 97.25 | {PERPLEXITY['student']:.4g} | {PERPLEXITY['teacher']:.4g} |" in markdown
    )
    assert 'id="selection-perplexity"' in html and "<strong>3: 0.25</strong>" in html


def test_fp32_deployed_without_a_no_kd_student(tmp_path, exported) -> None:
    inputs = build_upstream(tmp_path, exported, int8=False, baseline=False, selection=False)
    metrics, report, _ = _run(tmp_path, inputs)
    # An older student manifest: nothing recorded of the selection, nothing shown.
    assert report["distillation"]["selection"] is None
    assert "cut from the teacher" not in (tmp_path / "report" / "report.md").read_text()
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == ["teacher", "student", "student_onnx_fp32"]  # no teacher ONNX rows
    assert any("export.teacher_baseline = false" in note for note in report["notes"])
    assert set(report["headline"]) == {"teacher"}
    assert "teacher's own int8" not in (tmp_path / "report" / "report.md").read_text()
    assert "| int8 pass | none: fp32 only |" in (tmp_path / "report" / "report.md").read_text()
    bundle = inputs["export"] / "bundle"
    assert rows["student_onnx_fp32"]["deployed"]
    assert rows["student_onnx_fp32"]["bytes"] == (bundle / "model.onnx").stat().st_size
    assert report["distillation"]["perplexity_gain_over_no_kd"] is None
    assert any("no int8 model" in note for note in report["notes"])
    assert [c["key"] for c in report["samples"][0]["continuations"]] == [
        "teacher",
        "student",
        "student_onnx_fp32",
    ]
    assert metrics["deployed"] == "student_onnx_fp32"
    assert read_manifest(inputs["export"])["metrics"]["deployed"] == "fp32"


def test_ratios_read_as_words() -> None:
    times = generation_render.fmt_times
    assert times(2.5, "smaller", "larger") == "2.50× smaller"
    assert times(0.8, "smaller", "larger") == "1.25× larger"
    assert times(None, "faster", "slower") == "– faster"


def test_missing_upstream_and_foreign_reports_are_refused(tmp_path) -> None:
    ctx = RunContext(name="x", seed=0, task="causal-lm", workdir=tmp_path, recipe_dir=tmp_path)
    with pytest.raises(ArtifactError, match=r"missing upstream stage folder\(s\) \['export'\]"):
        generation_report.build_report(
            ctx, {name: tmp_path for name in ("data", "teacher", "student")}, CONFIG
        )
    with pytest.raises(ArtifactError, match="the data stage has no complete manifest"):
        generation_report.build_report(
            ctx, {name: tmp_path / name for name in generation_report.UPSTREAM}, CONFIG
        )
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"schema_version": 2, "task": "sequence-classification"}))
    with pytest.raises(ArtifactError, match="not a causal-lm report"):
        generation_render.load_report(path)


def test_teacher_baseline_is_a_causal_lm_key_defaulting_to_true() -> None:
    from distill.config import validate_recipe

    recipe = {
        "name": "t",
        "task": "causal-lm",
        "data": {"path": "x.csv"},
        "teacher": {"model": "some/model"},
        "student": {"num_layers": 2},
    }
    assert validate_recipe(recipe).export.teacher_baseline is True
    off = validate_recipe({**recipe, "export": {"teacher_baseline": False}})
    assert off.export.teacher_baseline is False
