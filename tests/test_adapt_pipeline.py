"""Stage `adapt` in real runs of tiny projects: the teacher stage fine-tunes the adapted
encoder (its frozen layers are the adapted ones, the plain twin's the original ones), the
report has the twin's row, an edit to the adaptation text reruns adapt and what follows
it (not the plain twin), an interrupted adaptation resumes, and the tagging task adapts too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import (
    SHORT_EXPORT_TIMING,
    build_tiny_classifier,
    run_distill,
    synthetic_rows,
    write_csv,
)
from safetensors.torch import load_file
from task_projects import PEOPLE, PLACES, ner_sentences
from test_resume import run_cli

from distill.pipeline.artifacts import read_manifest

NAME = "adapted"
ADAPT = """[adapt]
path = "tweets.csv"
epochs = 2
learning_rate = 3e-3
batch_size = 8
head_epochs = 1
held_out_fraction = 0.2
eval_steps = 4
baseline = "teacher-and-student"
"""


def _recipe(root: Path, adapt: str = ADAPT) -> None:
    (root / "recipe.toml").write_text(
        f"""name = "{NAME}"
seed = 5
[data]
path = "data.csv"
max_length = 16
{adapt}
[teacher]
model = "base"
epochs = 2
min_steps = 0
learning_rate = 3e-3
batch_size = 16
freeze_embeddings = true
freeze_layers = 2
[student]
num_layers = 1
epochs = 1
min_steps = 0
learning_rate = 3e-3
batch_size = 16
baseline = false
[export]
quantization = "none"
teacher_baseline = false
fp32_reference = false
{SHORT_EXPORT_TIMING}[report]
latency_runs = 3
latency_warmup = 1
tfidf_baseline = false
""",
        encoding="utf-8",
    )


def _tweets(root: Path, n: int, seed: int = 9) -> None:
    rows = [[text.replace(" ", " the ")] for text, _ in synthetic_rows(n, seed=seed)]
    write_csv(root / "tweets.csv", ["text"], rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer teacher whose embeddings and layers the teacher stage freezes (only its
    head trains): what it fine-tunes is then visible in its saved encoder."""
    root = tmp_path_factory.mktemp("adapt")
    build_tiny_classifier(root / "base", layers=2)
    write_csv(root / "data.csv", ["text", "label"], synthetic_rows(120))
    _tweets(root, 80)
    _recipe(root)
    result = run_distill(["run", "recipe.toml"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def _encoder(folder: Path) -> dict[str, torch.Tensor]:
    """A saved model's encoder weights by their name inside the encoder."""
    weights = load_file(folder / "model.safetensors")
    return {
        name.removeprefix("bert."): tensor
        for name, tensor in weights.items()
        if name.startswith(("bert.embeddings", "bert.encoder", "embeddings", "encoder"))
    }


def test_the_teacher_fine_tunes_the_adapted_encoder(project: Path) -> None:
    run = project / "runs" / NAME
    original = _encoder(project / "base")
    adapted = _encoder(run / "adapt" / "model")
    teacher = _encoder(run / "teacher" / "model")
    plain = _encoder(run / "plain-teacher" / "model")
    assert adapted.keys() == original.keys() == teacher.keys() == plain.keys()
    for name, tensor in original.items():
        assert adapted[name].shape == tensor.shape, name
        assert torch.equal(teacher[name], adapted[name]), name  # frozen: the adapted weights
        assert torch.equal(plain[name], tensor), name  # frozen: the original weights
    changed = [name for name in original if not torch.equal(adapted[name], original[name])]
    assert len(changed) > len(original) // 2, changed
    # The pooler (a classification head reads it; the masked-LM model has none) is kept.
    pooler = "bert.pooler.dense.weight"
    assert torch.equal(
        load_file(run / "adapt" / "model" / "model.safetensors")["pooler.dense.weight"],
        load_file(project / "base" / "model.safetensors")[pooler],
    )
    manifest = read_manifest(run / "adapt")["metrics"]
    assert manifest["head"] == "new (tied to the input embeddings)"
    assert manifest["text"]["texts"] + manifest["text"]["held_out"] == 80
    losses = manifest["masked_lm"]
    assert losses["after"]["loss"] < losses["after head"]["loss"] < losses["before"]["loss"]
    assert read_manifest(run / "teacher")["metrics"]["adapted"] is True
    assert read_manifest(run / "plain-teacher")["metrics"]["adapted"] is False


def test_the_report_has_the_plain_twin_and_the_adaptation_section(project: Path) -> None:
    report = json.loads((project / "reports" / NAME / "report.json").read_text("utf-8"))
    rows = {row["key"]: row for row in report["rows"]}
    plain = read_manifest(project / "runs" / NAME / "plain-teacher")["metrics"]["test"]
    assert rows["teacher_plain"]["accuracy"] == pytest.approx(plain["accuracy"])
    section = report["adaptation"]
    adapt = read_manifest(project / "runs" / NAME / "adapt")["metrics"]["masked_lm"]
    assert section["adapt"]["masked_lm"]["after"]["loss"] == round(adapt["after"]["loss"], 3)
    assert section["plain_teacher_trained"] and section["significance"]["verdict"]
    assert "Domain adaptation" in (project / "reports" / NAME / "report.md").read_text("utf-8")
    # The student of the plain teacher: its own labels and training, scored from its logits.
    plain_student = read_manifest(project / "runs" / NAME / "plain-student")
    assert plain_student["upstream"].keys() == {"data", "plain-teacher", "plain-labels"}
    assert rows["student_plain_teacher"]["accuracy"] == pytest.approx(
        plain_student["metrics"]["test"]["accuracy"]
    )
    assert section["student_gain"] == pytest.approx(
        rows["student"]["accuracy"] - rows["student_plain_teacher"]["accuracy"]
    )


def test_an_edit_to_the_adaptation_text_reruns_adapt_and_what_follows(
    project: Path, tmp_path: Path
) -> None:
    import shutil

    root = tmp_path / "edited"
    shutil.copytree(project, root)
    _tweets(root, 80, seed=10)  # other words: other masked-LM updates
    # Up to the labels: the stages after them follow through the same upstream digests.
    result = run_distill(["run", "recipe.toml", "--only", "labels"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "stage adapt    running (adapt.path changed on disk)" in log
    assert "stage teacher  running (upstream adapt changed)" in log
    for stage in ("data", "plain-teacher"):
        assert f"stage {stage:<8} skipped (up to date)" in log, stage
    assert "stage labels   running (forced)" in log  # --only: it would be stale too


def test_stage_adapt_without_an_adapt_table_is_an_error(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "data.csv").write_text((project / "data.csv").read_text("utf-8"), "utf-8")
    (root / "base").symlink_to(project / "base")
    _recipe(root, adapt="")
    result = run_distill(["run", "recipe.toml", "--only", "adapt"], root)
    assert result.returncode == 2
    assert "stage adapt does not run for this recipe: it has no [adapt] table" in result.stderr


def test_an_interrupted_adaptation_resumes(project: Path, tmp_path: Path) -> None:
    """Killed right after the head passes' checkpoint 8 is sealed: the rerun resumes from it
    and ends where the straight run (the project's) ended."""
    root = tmp_path / "killed"
    root.mkdir()
    for name in ("data.csv", "tweets.csv", "recipe.toml"):
        (root / name).write_text((project / name).read_text("utf-8"), "utf-8")
    (root / "base").symlink_to(project / "base")
    killed = run_cli(["run", "recipe.toml", "--only", "adapt"], root, "after-seal")
    assert killed.returncode == -9
    assert not (root / "runs" / NAME / "adapt").exists()
    resumed = run_distill(["run", "recipe.toml", "--only", "adapt"], root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "adapt (head): resuming from" in resumed.stderr
    assert "checkpoint-8" in resumed.stderr
    ours = read_manifest(root / "runs" / NAME / "adapt")["metrics"]
    theirs = read_manifest(project / "runs" / NAME / "adapt")["metrics"]
    assert ours["masked_lm"] == theirs["masked_lm"]
    assert ours["steps"] == theirs["steps"]


def test_the_tagging_task_adapts_its_teacher(tmp_path: Path) -> None:
    build_tiny_classifier(tmp_path / "base", layers=2, extra_words=PEOPLE + PLACES)
    lines = []
    for sentence in ner_sentences(80):
        lines += [f"{word}\t{tag}" for word, tag in sentence] + ["\t"]
    (tmp_path / "ner.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "recipe.toml").write_text(
        f"""name = "{NAME}"
task = "token-classification"
[data]
path = "ner.txt"
max_length = 16
[adapt]
epochs = 1
batch_size = 8
learning_rate = 3e-3
baseline = "teacher-and-student"
[teacher]
model = "base"
epochs = 1
min_steps = 0
batch_size = 16
[student]
num_layers = 1
""",
        encoding="utf-8",
    )
    result = run_distill(["run", "recipe.toml", "--only", "plain-student"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    adapt = read_manifest(tmp_path / "runs" / NAME / "adapt")["metrics"]
    assert adapt["text"]["source"] == "task text"
    assert adapt["text"]["texts"] + adapt["text"]["held_out"] == adapt["text"]["usable"]
    assert read_manifest(tmp_path / "runs" / NAME / "teacher")["metrics"]["adapted"] is True
    assert read_manifest(tmp_path / "runs" / NAME / "plain-teacher")["metrics"]["adapted"] is False
    # Its students of the plain teacher: the task's own labels (no [labels] table) and student.
    plain_labels = read_manifest(tmp_path / "runs" / NAME / "plain-labels")
    assert plain_labels["config"].keys() == {"data", "student.transfer"}
    assert read_manifest(tmp_path / "runs" / NAME / "plain-student")["metrics"]["test"]
