"""Command line: ``distill validate | run | schema | predict``.

``predict`` serves an exported bundle (:mod:`distill.serve`): it must not import torch or
transformers, so every heavy import stays inside the other handlers.

User errors (a bad recipe, missing data, a model that cannot be found) print one clear
message and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from distill.errors import DistillError

if TYPE_CHECKING:
    from distill.artifacts import RunContext

log = logging.getLogger("distill")


def _recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a recipe .toml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set student.temperature=4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    from distill.pipeline import STAGE_NAMES

    parser = argparse.ArgumentParser(
        prog="distill",
        description="Knowledge distillation: teacher -> student -> ONNX int8 -> report.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate", help="check a recipe and its sources; computes nothing"
    )
    _recipe_args(validate)

    run = commands.add_parser(
        "run", help="run the pipeline; stages that are up to date are skipped"
    )
    _recipe_args(run)
    which = run.add_mutually_exclusive_group()
    which.add_argument(
        "--from", dest="start", choices=STAGE_NAMES, help="rerun this stage and all after it"
    )
    which.add_argument(
        "--only",
        choices=STAGE_NAMES,
        help="rerun only this stage (earlier ones reused or run if stale)",
    )
    which.add_argument("--force", action="store_true", help="rerun every stage")
    run.add_argument(
        "--workdir",
        type=Path,
        default=Path.cwd(),
        help="where runs/, export/ and reports/ go (default: .)",
    )

    report = commands.add_parser("report", help="compare two runs' reports side by side")
    report.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        required=True,
        metavar=("REPORT_A", "REPORT_B"),
        help="two report folders, e.g. reports/A reports/B",
    )
    report.add_argument("-o", "--output", type=Path, help="folder to write (default: beside them)")

    from distill import bench

    bench.add_arguments(
        commands.add_parser("bench", help="CPU latency of a run's models, side by side")
    )

    schema = commands.add_parser("schema", help="write the recipe JSON Schema")
    schema.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    predict = commands.add_parser(
        "predict",
        help="classify texts with an exported bundle (onnxruntime only, no torch)",
        description=(
            "Classify texts with an exported bundle (export/<name>/). Texts come from the "
            "arguments, from --file (one per line), or from stdin when neither is given "
            "(or for '-'); blank lines are skipped. Prints one line per text: "
            "label<TAB>probability<TAB>every label=probability."
        ),
    )
    predict.add_argument("bundle", type=Path, help="bundle folder, e.g. export/<name>")
    predict.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts to classify ('-' reads stdin)"
    )
    predict.add_argument(
        "-f", "--file", type=Path, help="read texts from this file, one per line ('-': stdin)"
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help="print JSON lines: text, label, probability, probabilities per label",
    )
    predict.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: onnxruntime's choice)",
    )
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="texts per onnxruntime call (default: 32)",
    )
    return parser


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return number


def _configure_logging(quiet: bool, *, transformers_logging: bool = True) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not transformers_logging:  # `distill predict` must not import transformers
        return
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _validate(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.preflight import check_sources

    recipe, recipe_dir = load_recipe(args.recipe, args.overrides)
    check_sources(recipe, recipe_dir, args.recipe)
    print(
        f"{args.recipe}: ok (run {recipe.name!r}, task {recipe.task}, student init {recipe.student.init})"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from distill.artifacts import RunContext
    from distill.config import load_recipe
    from distill.pipeline import run_pipeline
    from distill.preflight import check_sources

    recipe, recipe_dir = load_recipe(args.recipe, args.overrides)
    check_sources(recipe, recipe_dir, args.recipe)
    from distill.distributed import current

    ctx = RunContext(
        name=recipe.name,
        seed=recipe.seed,
        task=recipe.task,
        workdir=args.workdir.resolve(),
        recipe_dir=recipe_dir,
        is_main_process=current().is_main,
    )
    if not ctx.is_main_process:  # one copy of the progress log, from the main process
        logging.getLogger("distill").setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        manifests = run_pipeline(recipe, ctx, start=args.start, only=args.only, force=args.force)
    except KeyboardInterrupt:
        print(
            "\ninterrupted; finished stages and sealed checkpoints are kept. Resume with:\n  "
            + _resume_command(args),
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if ctx.is_main_process:
        _summarise(ctx, manifests)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's stop, `kill`) ends the run like Ctrl-C: cleanly, with a resume hint."""
    raise KeyboardInterrupt


def _resume_command(args: argparse.Namespace) -> str:
    """The same run without --force/--from: up-to-date stages are reused, the rest resume."""
    words = ["distill", "run", args.recipe]
    for override in args.overrides:
        words += ["--set", override]
    if args.workdir.resolve() != Path.cwd().resolve():
        words += ["--workdir", str(args.workdir)]
    return " ".join(shlex.quote(w) for w in words)


def _summarise(ctx: RunContext, manifests: dict[str, dict]) -> None:
    """What a run ends with: each stage's time, the report's key rows, where things are."""
    lines = [f"run {ctx.name}: done"]
    for stage, manifest in manifests.items():
        lines.append(
            f"  {stage:<8} {manifest.get('wall_time_s', 0):8.1f} s  {ctx.stage_dir(stage)}"
        )
    report_json = ctx.report_dir / "report.json"
    if "report" in manifests and report_json.is_file():
        lines.append("")
        lines.extend(_key_rows(json.loads(report_json.read_text(encoding="utf-8"))))
    if "export" in manifests:
        lines.append(f"  bundle:  {ctx.export_dir}")
    if "report" in manifests:
        lines.append(f"  report:  {ctx.report_dir / 'report.html'}")
    print("\n".join(lines))


def _key_rows(report: dict) -> list[str]:
    """A few columns of the report's comparison table, as plain text."""
    lines = [f"  {'model':<34} {'accuracy':>8} {'macro-F1':>8} {'MB':>7} {'p50 ms':>7}"]
    for row in report.get("rows", []):
        latency = (row.get("latency") or {}).get("p50_ms")
        size = row.get("bytes")
        lines.append(
            f"  {row.get('name', row.get('key', '?'))[:34]:<34} {row.get('accuracy', 0):8.4f} "
            f"{row.get('macro_f1', 0):8.4f} {(size or 0) / 1e6:7.1f} "
            f"{'' if latency is None else f'{latency:.2f}':>7}"
        )
    return [*lines, ""]


def _report(args: argparse.Namespace) -> int:
    from distill.compare import run_compare

    first, second = args.compare
    out = run_compare(first, second, args.output)
    print(f"comparison written to {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from distill.bench import run_from_args

    return run_from_args(args)


def _schema(args: argparse.Namespace) -> int:
    from distill.config import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _read_lines(text: str) -> list[str]:
    """One text per line (\\n or \\r\\n); blank lines are skipped."""
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip()]


def _predict_texts(args: argparse.Namespace) -> list[str]:
    """The texts in order: arguments ('-' is stdin), then --file; stdin when neither is given."""
    from distill.errors import DataError

    def stdin_lines() -> list[str]:
        if sys.stdin is None:
            raise DataError("no texts given and no stdin to read them from")
        if sys.stdin.isatty():
            print("reading texts from stdin, one per line (end with Ctrl-D)", file=sys.stderr)
        return _read_lines(sys.stdin.read())

    texts: list[str] = []
    for text in args.texts:
        if text == "-":
            texts.extend(stdin_lines())
        else:
            texts.append(text)
    if args.file is not None:
        if str(args.file) == "-":
            texts.extend(stdin_lines())
        else:
            try:
                texts.extend(_read_lines(args.file.read_text(encoding="utf-8-sig")))
            except UnicodeDecodeError as exc:
                raise DataError(f"{args.file}: not UTF-8 text ({exc.reason})") from None
            except OSError as exc:
                raise DataError(f"{args.file}: cannot read it: {exc.strerror or exc}") from None
    elif not args.texts:
        texts.extend(stdin_lines())
    return texts


def _predict(args: argparse.Namespace) -> int:
    from distill.serve import load_bundle

    predictor = load_bundle(args.bundle, threads=args.threads)
    texts = _predict_texts(args)
    try:
        for prediction in predictor.iter_predict(texts, batch_size=args.batch_size):
            if args.json:
                line = json.dumps(prediction.to_dict(), ensure_ascii=False)
            else:
                scores = " ".join(f"{k}={v:.4f}" for k, v in prediction.probabilities.items())
                line = f"{prediction.label}\t{prediction.probability:.4f}\t{scores}"
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `distill predict ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills `predict`'s TEXT list from one run of positionals only; texts after an
    # option (`predict BUNDLE --json "a" "b"`) come back unrecognised and are texts too.
    if extra and args.command == "predict" and all(a == "-" or a[:1] != "-" for a in extra):
        args.texts = [*args.texts, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.quiet, transformers_logging=args.command != "predict")
    handlers = {
        "validate": _validate,
        "run": _run,
        "report": _report,
        "bench": _bench,
        "schema": _schema,
        "predict": _predict,
    }
    try:
        return handlers[args.command](args)
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
