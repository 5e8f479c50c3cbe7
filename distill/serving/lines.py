"""The line contract of ``distill predict``: one output line per input line, in input order.

Inputs are read as bytes and decoded one line at a time, so one undecodable line (not
UTF-8) or one blank line costs that line only: it gets an error line in its place, naming
the source and the line number, and every other line is still predicted.

Prediction streams (:func:`write_predictions`): lines are read, predicted and written one
batch at a time, each batch's output flushed before the next batch is read, so memory
stays bounded whatever the input's size and the first results appear while later input is
still being read (``yes | distill predict B | head -3`` prints three lines and exits).

Standard library (and :mod:`distill.errors`) only: ``distill predict`` must not import torch
or transformers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO, TypeVar

from distill.errors import DataError

T = TypeVar("T")

ARGUMENTS = "arguments"
STDIN = "stdin"
BOM = b"\xef\xbb\xbf"
BLANK = "blank text: nothing to classify"


@dataclass(frozen=True)
class InputLine:
    """One input text, or why it cannot be predicted (``text`` is then None)."""

    source: str  # "arguments", "stdin" or the --file path
    line: int  # 1-based line in its source (for arguments: the argument's position)
    text: str | None
    error: str | None = None

    @property
    def where(self) -> str:
        if self.source == ARGUMENTS:
            return f"argument {self.line}"
        return f"{self.source} line {self.line}"

    def error_json(self) -> str:
        return json.dumps(
            {"line": self.line, "source": self.source, "error": self.error}, ensure_ascii=False
        )

    def error_tsv(self) -> str:
        return f"error\t{self.where}: {self.error}"


def to_bytes(text: str) -> bytes:
    """The bytes a str came from: argv and text-mode stdin keep undecodable bytes as
    surrogate escapes; other lone surrogates are kept too (and fail to decode later)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def decode_utf8(raw: bytes) -> tuple[str | None, str | None]:
    """``(text, None)`` for strict UTF-8 ``raw``, else ``(None, why)``: the first bad byte and
    where it is (the message of every verb that reads text from argv or stdin)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, (
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} ({exc.reason})"
        )


def decode_line(raw: bytes, source: str, line: int) -> InputLine:
    """One line as strict UTF-8; a decoding failure or a blank line is that line's error."""
    text, problem = decode_utf8(raw)
    if text is None:
        return InputLine(source, line, None, problem)
    if not text.strip():
        return InputLine(source, line, None, BLANK)
    return InputLine(source, line, text)


def read_lines(stream: Iterable[bytes], source: str) -> Iterator[InputLine]:
    """Each ``\\n``- or ``\\r\\n``-terminated line of a binary stream, read lazily (a final
    newline ends the last line, it does not start an empty one); a leading UTF-8 BOM is
    dropped. A failure to read is a :class:`DataError` naming ``source``."""
    number = 0
    try:
        for raw in stream:
            number += 1
            if number == 1:
                raw = raw.removeprefix(BOM)
                if not raw:  # a BOM and nothing else: no line at all
                    return
            yield decode_line(raw.removesuffix(b"\n").removesuffix(b"\r"), source, number)
    except OSError as exc:
        raise DataError(
            f"{source}: cannot read it after line {number}: {exc.strerror or exc}"
        ) from None


def input_lines(
    texts: list[str], file: Path | None, stdin: TextIO | None, stack: ExitStack
) -> Iterator[InputLine]:
    """``distill predict``'s inputs in order, read lazily: the text arguments (``-`` is
    stdin), then ``file`` (``-``: stdin); stdin when neither is given. What cannot be read at
    all (no stdin, an unreadable file) is a :class:`DataError` here, before any prediction;
    the file is closed with ``stack``."""
    reads_stdin = "-" in texts or str(file) == "-" or (not texts and file is None)
    if reads_stdin and stdin is None:
        raise DataError("no texts given and no stdin to read them from")
    file_lines: Iterable[InputLine] = ()
    if file is not None and str(file) != "-":
        try:
            stream = stack.enter_context(file.open("rb"))
        except OSError as exc:
            raise DataError(f"{file}: cannot read it: {exc.strerror or exc}") from None
        file_lines = read_lines(stream, str(file))

    def stdin_lines() -> Iterator[InputLine]:
        assert stdin is not None  # checked above
        if stdin.isatty():
            print("reading texts from stdin, one per line (end with Ctrl-D)", file=sys.stderr)
        # Bytes, so that one undecodable line fails alone (text-mode stdin may be a StringIO).
        buffer = getattr(stdin, "buffer", None)
        yield from read_lines(buffer if buffer is not None else map(to_bytes, stdin), STDIN)

    numbered = iter(argument_lines([text for text in texts if text != "-"]))
    parts: list[Iterable[InputLine]] = [
        stdin_lines() if text == "-" else [next(numbered)] for text in texts
    ]
    if file is not None:
        parts.append(stdin_lines() if str(file) == "-" else file_lines)
    elif not texts:
        parts.append(stdin_lines())
    return chain.from_iterable(parts)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), pulled lazily."""
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, not {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def argument_lines(texts: Iterable[str]) -> list[InputLine]:
    """Texts given as arguments, numbered by position."""
    return [decode_line(to_bytes(text), ARGUMENTS, n) for n, text in enumerate(texts, start=1)]


def prediction_line(prediction: Any, as_json: bool) -> str:
    """One output line for one prediction, in the format its task's runner gives it: its
    ``to_dict()`` as JSON (``--json``), else its ``to_tsv()``."""
    if as_json:
        return json.dumps(prediction.to_dict(), ensure_ascii=False)
    return prediction.to_tsv()


@dataclass
class Tally:
    """What :func:`write_predictions` wrote: every line, and the first failed ones only (so
    that a long input with many bad lines keeps memory bounded)."""

    total: int = 0
    failed: int = 0
    first_failed: list[InputLine] = field(default_factory=list)
    keep: int = 5

    def fail(self, item: InputLine) -> None:
        self.failed += 1
        if len(self.first_failed) < self.keep:
            self.first_failed.append(item)

    def summary(self) -> str:
        """One message for every line that got an error instead of a prediction."""
        listed = "; ".join(f"{item.where}: {item.error}" for item in self.first_failed)
        more = self.failed - len(self.first_failed)
        return (
            f"{self.failed} of {self.total} input line(s) could not be predicted (each has an "
            f"error line in its place in the output): {listed}"
            + (f"; and {more} more" if more else "")
        )


def write_predictions(
    inputs: Iterable[InputLine],
    predict: Callable[[list[str]], Iterable[Any]],
    out: TextIO,
    *,
    batch_size: int,
    as_json: bool = False,
) -> Tally:
    """Read ``batch_size`` input lines, predict their texts with one ``predict`` call, write
    one line per input line in input order (an error line for a line without text) and
    flush, then read the next batch: memory is bounded by one batch, not by the input.

    A prediction with an ``error`` (a line the runner could not read as its task's input, a
    question and context that are not a JSON object, say) is a failed line like an undecodable
    one: its error line takes its place."""
    tally = Tally()
    for chunk in batches(inputs, batch_size):
        predictions = iter(predict([item.text for item in chunk if item.text is not None]))
        lines = []
        for item in chunk:
            if item.text is None:
                tally.fail(item)
                lines.append(item.error_json() if as_json else item.error_tsv())
            else:
                prediction = next(predictions)
                refused = getattr(prediction, "error", None)
                if refused:  # the runner could not read this line (its task's input format)
                    item = replace(item, text=None, error=refused)
                    tally.fail(item)
                    lines.append(item.error_json() if as_json else item.error_tsv())
                else:
                    lines.append(prediction_line(prediction, as_json))
        tally.total += len(chunk)
        out.write("\n".join(lines) + "\n")
        out.flush()
    return tally


def quiet_broken_pipe() -> None:
    """After ``distill ... | head`` closed the pipe: send the rest of stdout (the flush at
    exit included) to /dev/null, so that the command stops quietly, as CLIs do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass
