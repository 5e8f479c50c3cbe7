"""Progress: lines in logs (format, rate limit), nothing when quiet, tqdm on a terminal, and a
real Trainer that prints no raw log dicts and trains the same weights as without progress."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from distill.pipeline import progress
from distill.pipeline.progress import PredictionProgress, TrainingProgress, track


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def distill_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "distill"]


def train_steps(
    callback: TrainingProgress, clock: FakeClock, total: int, seconds_per_step: float
) -> None:
    """The callback events of a run of ``total`` steps: loss logged every 10, one evaluation
    (two batches) at step 120."""
    args = SimpleNamespace(metric_for_best_model="accuracy")
    state = SimpleNamespace(max_steps=total, global_step=0, is_world_process_zero=True)
    callback.on_train_begin(args, state, None)
    for step in range(1, total + 1):
        clock.now += seconds_per_step
        state.global_step = step
        callback.on_step_end(args, state, None)
        if step % 10 == 0:
            callback.on_log(args, state, None, logs={"loss": 1.0 - step / 1000, "epoch": 0.1})
        if step == 120:
            for _ in range(2):
                callback.on_prediction_step(args, state, None, eval_dataloader=[0, 1])
            metrics = {"eval_loss": 0.52, "eval_accuracy": 0.8, "eval_runtime": 0.1, "epoch": 1.0}
            callback.on_evaluate(args, state, None, metrics=metrics)
    callback.on_train_end(args, state, None)


def test_lines_say_step_loss_rate_and_time_left_every_10_percent_and_30_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distill")
    clock = FakeClock()
    train_steps(TrainingProgress("teacher", clock=clock), clock, total=244, seconds_per_step=0.3125)
    # 3.2 steps/s: 10% (24.4 steps) comes before 30 s (96 steps), so a line every 30 s
    assert distill_lines(caplog) == [
        "teacher: step 96/244 (39%), loss 0.91, 3.2 steps/s, ~46 s left",
        "teacher: evaluation at step 120: loss 0.52, accuracy 0.8",
        "teacher: step 192/244 (78%), loss 0.81, 3.2 steps/s, ~16 s left",
        "teacher: done, step 244/244 in 76 s, 3.2 steps/s",
    ]


def test_a_short_run_logs_its_evaluations_and_its_end_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distill")
    clock = FakeClock()
    train_steps(TrainingProgress("student (distilled)", clock=clock), clock, 200, 0.1)
    assert distill_lines(caplog) == [
        "student (distilled): evaluation at step 120: loss 0.52, accuracy 0.8",
        "student (distilled): done, step 200/200 in 20 s, 10.0 steps/s",
    ]


def test_slow_steps_get_a_line_every_10_percent_or_at_least_every_5_minutes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distill")
    clock = FakeClock()
    items = track(range(40), desc="labels (train)", unit="batch", clock=clock)
    for _ in items:
        clock.now += 40.0  # 10% = 4 batches = 160 s
    slow = distill_lines(caplog)
    assert slow[:2] == [
        "labels (train): batch 4/40 (10%), 40.0 s/batch, ~24 min left",
        "labels (train): batch 8/40 (20%), 40.0 s/batch, ~21 min left",
    ]
    assert len(slow) == 9  # 10% .. 90%; the end is the caller's to say
    caplog.clear()
    for _ in track(range(1000), desc="export candidates", unit="candidate", clock=clock):
        clock.now += 60.0  # 10% would be 100 minutes: the 5-minute line comes first
        if clock.now > 40 * 40.0 + 11 * 60:
            break
    assert distill_lines(caplog) == [
        "export candidates: candidate 5/1000 (0%), 60.0 s/candidate, ~16.6 h left",
        "export candidates: candidate 10/1000 (1%), 60.0 s/candidate, ~16.5 h left",
    ]


def test_quiet_shows_nothing_even_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="distill")  # what `distill -q` configures
    clock, terminal = FakeClock(), Terminal()
    train_steps(TrainingProgress("teacher", stream=terminal, clock=clock), clock, 244, 1.0)
    assert list(track(range(50), desc="timing", stream=terminal, clock=clock)) == list(range(50))
    assert distill_lines(caplog) == [] and terminal.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar_with_loss_and_evaluation_and_no_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tqdm import tqdm

    caplog.set_level(logging.INFO, logger="distill")
    terminal = Terminal()
    callback = TrainingProgress("teacher", stream=terminal)
    args = SimpleNamespace(metric_for_best_model="accuracy")
    state = SimpleNamespace(max_steps=50, global_step=0, is_world_process_zero=True)
    callback.on_train_begin(args, state, None)
    assert callback.progress is not None and isinstance(callback.progress.bar, tqdm)
    state.global_step = 20
    callback.on_step_end(args, state, None)
    callback.on_log(args, state, None, logs={"loss": 0.71})
    callback.on_evaluate(args, state, None, metrics={"eval_loss": 0.5, "eval_accuracy": 0.75})
    assert callback.progress.bar.postfix == "loss=0.71, eval_loss=0.5, eval_accuracy=0.75"
    callback.on_train_end(args, state, None)
    assert "teacher:" in terminal.getvalue() and "20/50" in terminal.getvalue()
    assert list(track([1, 2, 3], desc="timing", stream=terminal)) == [1, 2, 3]
    assert "timing:" in terminal.getvalue()
    assert distill_lines(caplog) == []


def test_only_the_main_process_shows_progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="distill")
    terminal = Terminal()
    callback = PredictionProgress("labels (train)", stream=terminal)
    state = SimpleNamespace(is_world_process_zero=False)
    for _ in range(3):
        callback.on_prediction_step(None, state, None, eval_dataloader=[0, 1, 2])
    callback.on_predict(None, state, None, metrics={})
    assert terminal.getvalue() == "" and distill_lines(caplog) == []


def test_figures_read_well() -> None:
    assert [progress.duration(s) for s in (39.4, 300, 5400)] == ["39 s", "5 min", "1.5 h"]
    assert progress.rate_text(3.21, "step") == "3.2 steps/s"
    assert progress.rate_text(250, "batch") == "250 batches/s"
    assert progress.rate_text(0.4, "step") == "2.5 s/step"


# --------------------------------------------------------------------------- a real Trainer


def _teacher_run(root: Path, tiny_model_dir: Path) -> dict[str, Any]:
    from conftest import synthetic_rows, write_csv

    from distill.config import DataConfig, TeacherConfig
    from distill.pipeline.artifacts import RunContext
    from distill.tasks.classification.stages import data as data_stage
    from distill.tasks.classification.stages import teacher as teacher_stage

    root.mkdir()
    csv_path = write_csv(root / "reviews.csv", ["text", "label"], synthetic_rows(64))
    ctx = RunContext(
        name="t", seed=3, task="sequence-classification", workdir=root, recipe_dir=root
    )
    data = DataConfig(path=str(csv_path), max_length=24)
    (root / "data").mkdir()
    (root / "teacher").mkdir()
    data_stage.run(ctx, {}, root / "data", data=data)
    teacher = TeacherConfig(
        model=str(tiny_model_dir), epochs=1, min_steps=0, learning_rate=3e-3, batch_size=4
    )
    return teacher_stage.run(
        ctx, {"data": root / "data"}, root / "teacher", data=data, teacher=teacher
    )


def _timeless(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    timed = ("runtime", "per_second")
    return [{k: v for k, v in row.items() if not k.endswith(timed)} for row in history]


def test_a_real_training_prints_no_log_dicts_and_trains_the_same_weights(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distill.train import trainer as shared

    caplog.set_level(logging.INFO, logger="distill")
    metrics = _teacher_run(tmp_path / "new", tiny_model_dir)
    out = capsys.readouterr().out
    assert metrics["steps"] >= 10  # logging_steps = 10: the Trainer had a loss dict to print
    assert "{'" not in out and "'loss'" not in out and "train_runtime" not in out
    lines = distill_lines(caplog)
    assert any(line.startswith("teacher: evaluation at step ") for line in lines)
    steps = metrics["steps"]
    assert any(line.startswith(f"teacher: done, step {steps}/") for line in lines)

    # Before distill's progress: the Trainer's PrinterCallback, nothing else. Same training.
    monkeypatch.setattr(shared, "show_progress", lambda trainer, callback=None: None)
    _teacher_run(tmp_path / "old", tiny_model_dir)
    assert "{'loss'" in capsys.readouterr().out  # the dicts the issue is about
    new, old = (tmp_path / name / "teacher" for name in ("new", "old"))
    weights = "model/model.safetensors"
    assert (new / weights).read_bytes() == (old / weights).read_bytes()
    history = [json.loads((f / "log_history.json").read_text()) for f in (new, old)]
    assert _timeless(history[0]) == _timeless(history[1])
