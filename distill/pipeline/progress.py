"""Progress of long work: a bar on a terminal, a line now and then in logs, nothing under -q.

Whether anything shows is logging configuration, not a flag handed down: progress shows when
the ``distill`` logger is enabled for INFO (``distill -q`` sets WARNING). How: a tqdm bar when
the stream (stderr) is a terminal, else one line per interval through that logger. Only the
main process shows it. Nothing here touches a random generator or the Trainer's arguments,
so what is trained or measured is the same with or without progress.

:func:`track` wraps a plain loop; :class:`TrainingProgress` and :class:`PredictionProgress`
are Trainer callbacks (training steps; batches of an evaluation or prediction pass).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, Literal, TextIO, TypeVar

from distill.pipeline.distributed import current

log = logging.getLogger("distill")

# Lines (not a terminal): one once both 10% more of the work and 30 s have passed since the
# last, so a run under 50 minutes logs at most ten, never two within 30 s, and a short one
# (tests, smoke recipes) none; and one at least every 5 minutes, so a long run never looks
# hung in a CI log.
LINE_FRACTION = 0.10
LINE_MIN_S = 30.0
LINE_MAX_S = 300.0

Clock = Callable[[], float]
Mode = Literal["quiet", "bar", "lines"]
T = TypeVar("T")


def output_mode(stream: TextIO | None = None, main: bool = True) -> Mode:
    """``quiet`` below INFO or off the main process, ``bar`` on a terminal, else ``lines``."""
    if not main or not log.isEnabledFor(logging.INFO):
        return "quiet"
    return "bar" if _terminal(stream or sys.stderr) else "lines"


def _terminal(stream: TextIO) -> bool:
    """A terminal with a width: on a pseudo-terminal of size 0 (some CI runners) a bar is blank."""
    if not getattr(stream, "isatty", lambda: False)():
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError):  # no descriptor to ask (a wrapped stream): its isatty() says
        return True


def duration(seconds: float) -> str:
    """``39 s``, ``4 min``, ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def rate_text(rate: float, unit: str) -> str:
    """``3.2 steps/s``; ``2.5 s/step`` below one a second."""
    if rate >= 1:
        return f"{rate:.{0 if rate >= 100 else 1}f} {_plural(unit)}/s"
    return f"{1 / rate:.1f} s/{unit}"


class Progress:
    """Progress of one piece of work counted in ``unit``s (``total`` None when unknown)."""

    def __init__(
        self,
        desc: str,
        total: int | None,
        *,
        unit: str = "item",
        initial: int = 0,
        leave: bool = False,
        stream: TextIO | None = None,
        clock: Clock = time.monotonic,
        main: bool = True,
    ) -> None:
        self.desc, self.total, self.unit, self.done = desc, total, unit, initial
        self.clock = clock
        self.mode = output_mode(stream, main)
        self.started = (initial, clock())
        self.last_line = self.started  # (done, time) at the last line written
        self.postfix: dict[str, str] = {}
        self.bar: Any = None
        if self.mode == "bar":
            from tqdm import tqdm  # imported here: the serving path never shows a bar

            self.bar = tqdm(
                desc=desc,
                total=total,
                initial=initial,
                unit=unit,
                leave=leave,
                file=stream or sys.stderr,
                dynamic_ncols=True,
            )

    def update(self, done: int) -> None:
        """``done`` units are finished (in all, not since the last call)."""
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if self.mode == "lines":
            now = self.clock()
            if self._line_due(now):
                log.info("%s: %s", self.desc, self.line(now))
                self.last_line = (done, now)

    def _line_due(self, now: float) -> bool:
        if self.total is not None and self.done >= self.total:
            return False  # the end is said by whoever closes
        last_done, last_time = self.last_line
        waited = now - last_time
        moved = self.total is None or self.done - last_done >= LINE_FRACTION * self.total
        return (moved and waited >= LINE_MIN_S) or waited >= LINE_MAX_S

    def rate(self, now: float) -> float | None:
        """Units per second since the start (None before any)."""
        first, began = self.started
        return (self.done - first) / (now - began) if self.done > first and now > began else None

    def line(self, now: float) -> str:
        """``step 120/244 (49%), loss 0.71, 3.2 steps/s, ~39 s left``"""
        if self.total:
            parts = [f"{self.unit} {self.done}/{self.total} ({100 * self.done // self.total}%)"]
        else:
            parts = [f"{self.done} {_plural(self.unit)}"]
        parts += [f"{name} {value}" for name, value in self.postfix.items()]
        rate = self.rate(now)
        if rate:
            parts.append(rate_text(rate, self.unit))
            if self.total:
                parts.append(f"~{duration((self.total - self.done) / rate)} left")
        return ", ".join(parts)

    def set_postfix(self, **values: float) -> None:
        """Figures shown beside the count (the last loss, an evaluation's accuracy)."""
        self.postfix.update({name: f"{value:.3g}" for name, value in values.items()})
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def note(self, text: str, **figures: float) -> None:
        """An event (an evaluation): its own line in logs; on a bar, ``figures`` join the
        postfix instead."""
        if self.bar is not None:
            self.set_postfix(**figures)
        elif self.mode == "lines":
            log.info("%s: %s", self.desc, text)

    def close(self, summary: bool = False) -> None:
        """End the bar; in logs, with ``summary``, a last line: how far, how long, how fast."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines" and summary:
            now = self.clock()
            rate = self.rate(now)
            count = f"{self.unit} {self.done}/{self.total}" if self.total else str(self.done)
            speed = f", {rate_text(rate, self.unit)}" if rate else ""
            log.info(
                "%s: done, %s in %s%s", self.desc, count, duration(now - self.started[1]), speed
            )
        self.mode = "quiet"


def track(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    *,
    unit: str = "item",
    stream: TextIO | None = None,
    clock: Clock = time.monotonic,
) -> Iterator[T]:
    """The items of ``iterable``, its progress shown meanwhile (an item counts once the loop
    asks for the next). ``total`` defaults to ``len(iterable)`` where it has one."""
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    progress = Progress(desc, total, unit=unit, stream=stream, clock=clock, main=current().is_main)
    try:
        for done, item in enumerate(iterable, 1):
            yield item
            progress.update(done)
    finally:
        progress.close()


# --------------------------------------------------------------------------- Trainer callbacks


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class _TrainerEvents:
    """A Trainer callback by duck typing: the Trainer calls each ``on_*`` event by name, and
    those a subclass leaves out do nothing. Not a subclass of transformers' TrainerCallback,
    whose import (seconds) this module, imported by the ONNX serving path, must not pay."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("on_"):
            return _nothing
        raise AttributeError(name)


def _batches(dataloader: Any) -> int | None:
    try:
        return len(dataloader)
    except TypeError:  # an iterable dataset has no length
        return None


class PredictionProgress(_TrainerEvents):
    """The batches of one evaluation or prediction pass of a Trainer."""

    def __init__(
        self, desc: str, *, stream: TextIO | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.desc, self.stream, self.clock = desc, stream, clock
        self.progress: Progress | None = None

    def on_prediction_step(
        self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kwargs: Any
    ) -> None:
        if self.progress is None:
            self.progress = Progress(
                self.desc,
                _batches(eval_dataloader),
                unit="batch",
                stream=self.stream,
                clock=self.clock,
                main=state.is_world_process_zero,
            )
        self.progress.update(self.progress.done + 1)

    def on_evaluate(self, *args: Any, **kwargs: Any) -> None:
        self.close()

    def on_predict(self, *args: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None


class TrainingProgress(_TrainerEvents):
    """One training run: steps out of ``max_steps``, the last logged loss, each evaluation
    (its loss and the metric that picks the best checkpoint); a summary line at the end."""

    def __init__(
        self, stage: str, *, stream: TextIO | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.stage, self.stream, self.clock = stage, stream, clock
        self.progress: Progress | None = None
        self.evaluation = PredictionProgress(f"{stage} evaluation", stream=stream, clock=clock)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress = Progress(
            self.stage,
            state.max_steps or None,
            unit="step",
            initial=state.global_step,  # a resumed run starts where its checkpoint left off
            leave=True,
            stream=self.stream,
            clock=self.clock,
            main=state.is_world_process_zero,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self.progress is not None and logs and "loss" in logs:
            self.progress.set_postfix(loss=logs["loss"])

    def on_prediction_step(self, *args: Any, **kwargs: Any) -> None:
        if self.progress is not None:  # evaluations during training; predict() has its own
            self.evaluation.on_prediction_step(*args, **kwargs)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        self.evaluation.close()
        if self.progress is None or not metrics:
            return
        shown = evaluation_figures(metrics, getattr(args, "metric_for_best_model", None))
        figures = ", ".join(f"{name} {value:.3g}" for name, value in shown.items())
        self.progress.note(
            f"evaluation at step {state.global_step}: {figures}",
            **{f"eval_{name}": value for name, value in shown.items()},
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.close(summary=True)
            self.progress = None


def evaluation_figures(metrics: dict[str, Any], best_metric: str | None) -> dict[str, float]:
    """The evaluation's loss and the metric that picks the best checkpoint, unprefixed."""
    names = ["loss"] + ([best_metric.removeprefix("eval_")] if best_metric else [])
    return {
        name: float(metrics[f"eval_{name}"])
        for name in dict.fromkeys(names)
        if isinstance(metrics.get(f"eval_{name}"), int | float)
    }
