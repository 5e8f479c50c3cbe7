"""The argument checks of the verbs that serve a bundle (``predict``, ``generate``), torch-free:
``--threads`` capped at the cores, ``generate``'s decoding flags, its PROMPT read as UTF-8."""

from __future__ import annotations

import argparse
import logging
import math
import sys

from distill.errors import DataError
from distill.serving.lines import BOM, decode_utf8, to_bytes
from distill.timing.latency import available_cores

log = logging.getLogger("distill")


def capped_threads(requested: int | None) -> int | None:
    """``--threads`` of ``predict`` and ``generate``, capped at the cores this process may
    use: onnxruntime starts every thread asked for (100000 of them take minutes and starve
    the machine), and threads beyond the cores only compete for them."""
    if requested is None:
        return None
    cores = available_cores()
    if requested <= cores:
        return requested
    log.warning(
        "--threads %d is more than the %d core(s) available; using %d", requested, cores, cores
    )
    return cores


def sampling_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with ``generate``'s decoding flags (the library's contract: a finite
    temperature > 0, top-k >= 1, top-p in (0, 1]; greedy takes none of them)."""
    problems = []
    if not args.sample:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("temperature", "top_k", "top_p", "seed")
            if getattr(args, name) is not None
        ]
        if given:
            problems.append(f"{', '.join(given)} only apply with --sample (greedy is the default)")
    if args.temperature is not None and not (
        math.isfinite(args.temperature) and args.temperature > 0
    ):
        problems.append(f"--temperature must be a finite number > 0, not {args.temperature:g}")
    if args.top_k is not None and args.top_k < 1:
        problems.append(f"--top-k must be >= 1, not {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        problems.append(f"--top-p must be in (0, 1], not {args.top_p:g}")
    return problems


def read_prompt(prompt: str) -> str:
    """PROMPT as strict UTF-8 text ('-': all of stdin, less one final newline), read as bytes
    like ``predict``'s inputs: argv keeps undecodable bytes as surrogates that the tokenizer
    cannot take."""
    where = "PROMPT"
    if prompt == "-":
        if sys.stdin is None:
            raise DataError("PROMPT is '-' but there is no stdin to read it from")
        buffer = getattr(sys.stdin, "buffer", None)
        raw = buffer.read() if buffer is not None else to_bytes(sys.stdin.read())
        raw, where = raw.removeprefix(BOM).removesuffix(b"\n"), "PROMPT (stdin)"
    else:
        raw = to_bytes(prompt)
    text, problem = decode_utf8(raw)
    if text is None:
        raise DataError(f"{where} is {problem}; give the text to continue as UTF-8")
    if not text.strip():
        raise DataError("PROMPT is empty; give the text to continue")
    return text
