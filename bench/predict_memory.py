"""Peak memory of ``distill predict`` on a large input arriving through a pipe: it streams,
so its resident set stays flat however many megabytes go through.

    python bench/predict_memory.py BUNDLE [--mb 200] [--words 1000] [--batch-size 32]
                                   [--threads 1]

Runs ``python -m distill predict BUNDLE`` as a child process, writes ``--mb`` megabytes of
generated lines (short sentences cycled, each ending in one of ``--words`` numbers) into its
stdin while reading (and counting) its output, and prints the input size, lines out, when
the first output came, wall and CPU time and the child's peak RSS (the child's own rusage
from ``wait4``, what ``/usr/bin/time -v`` reports).

Every distinct word is cached by the word-cache tokenizer (``distill.tasks.classification.fast_tokens``,
at most
500k chunks), so ``--words`` of the order of the input's line count measures that cache's
growth too; the default keeps to a small vocabulary and measures streaming alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "the flight was great and the crew was lovely",
    "lost my bag again, third time this year",
    "is the 6pm flight to denver still on time",
    "worst service ever, two hours on the tarmac",
]


def _feed(stdin: IO[bytes], megabytes: float, words: int) -> None:
    """Write about ``megabytes`` MB of lines in 1 MB chunks, then close the pipe."""
    target, written, number = int(megabytes * 1e6), 0, 0
    try:
        while written < target:
            lines = []
            size = 0
            while size < 1_000_000:
                line = f"{SENTENCES[number % len(SENTENCES)]} {number % words}\n".encode()
                lines.append(line)
                size += len(line)
                number += 1
            stdin.write(b"".join(lines))
            written += size
    except BrokenPipeError:
        pass
    finally:
        try:
            stdin.close()
        except BrokenPipeError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--mb", type=float, default=200.0, help="input size in MB")
    parser.add_argument("--words", type=int, default=1000, help="distinct final words")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    command = [sys.executable, "-m", "distill", "predict", str(args.bundle)]
    command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert child.stdin is not None and child.stdout is not None
    feeder = threading.Thread(target=_feed, args=(child.stdin, args.mb, args.words), daemon=True)
    feeder.start()
    lines, first = 0, None
    for chunk in iter(lambda: child.stdout.read(1 << 16), b""):  # type: ignore[union-attr]
        if first is None:
            first = time.perf_counter() - start
        lines += chunk.count(b"\n")
    _, wait_status, usage = os.wait4(child.pid, 0)
    child.returncode = status = os.waitstatus_to_exitcode(wait_status)
    feeder.join()
    wall = time.perf_counter() - start
    print(
        f"input {args.mb:g} MB, {lines} lines out, exit {status}; first output after "
        f"{first or 0:.1f} s; wall {wall:.1f} s, child CPU {usage.ru_utime + usage.ru_stime:.1f} s; "
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB"
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
