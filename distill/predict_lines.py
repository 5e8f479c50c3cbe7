"""The line contract of ``distill predict``: one output line per input line, in input order.

Inputs are read as bytes and decoded one line at a time, so one undecodable line (not
UTF-8) or one blank line costs that line only: it gets an error line in its place, naming
the source and the line number, and every other line is still predicted.

Standard library only: ``distill predict`` must not import torch or transformers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


def split_lines(data: bytes, source: str) -> list[InputLine]:
    """Each ``\\n``- or ``\\r\\n``-terminated line of ``data`` (a final newline ends the last
    line, it does not start an empty one); a leading UTF-8 BOM is dropped."""
    data = data.removeprefix(BOM)
    pieces = data.split(b"\n")
    if pieces[-1] == b"":  # the text ended with a newline (or was empty)
        pieces.pop()
    return [
        decode_line(piece.removesuffix(b"\r"), source, number)
        for number, piece in enumerate(pieces, start=1)
    ]


def argument_lines(texts: Iterable[str]) -> list[InputLine]:
    """Texts given as arguments, numbered by position."""
    return [decode_line(to_bytes(text), ARGUMENTS, n) for n, text in enumerate(texts, start=1)]


def prediction_tsv(prediction: Any) -> str:
    """One output line: the prediction's own ``to_tsv()`` where its task defines one (entities),
    else classification's ``label<TAB>probability<TAB>label=probability ...``."""
    to_tsv = getattr(prediction, "to_tsv", None)
    if callable(to_tsv):
        return to_tsv()
    scores = " ".join(f"{k}={v:.4f}" for k, v in prediction.probabilities.items())
    return f"{prediction.label}\t{prediction.probability:.4f}\t{scores}"


def failure_summary(failed: list[InputLine], total: int, shown: int = 5) -> str:
    """One message for every line that got an error instead of a prediction."""
    listed = "; ".join(f"{item.where}: {item.error}" for item in failed[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return (
        f"{len(failed)} of {total} input line(s) could not be predicted (each has an error "
        f"line in its place in the output): {listed}{more}"
    )
