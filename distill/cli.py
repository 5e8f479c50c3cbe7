"""Command line: ``distill validate | run | schema``.

User errors (a bad recipe, missing data, a model that cannot be found) print one clear
message and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from distill.errors import DistillError

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

    schema = commands.add_parser("schema", help="write the recipe JSON Schema")
    schema.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    return parser


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
    ctx = RunContext(
        name=recipe.name,
        seed=recipe.seed,
        task=recipe.task,
        workdir=args.workdir.resolve(),
        recipe_dir=recipe_dir,
    )
    try:
        manifests = run_pipeline(recipe, ctx, start=args.start, only=args.only, force=args.force)
    except KeyboardInterrupt:
        resume = " ".join(shlex.quote(a) for a in ["distill", *sys.argv[1:]])
        print(f"\ninterrupted; finished stages are kept. Resume with:\n  {resume}", file=sys.stderr)
        return 130
    _summarise(ctx, manifests)
    return 0


def _summarise(ctx: object, manifests: dict[str, dict]) -> None:
    from distill.artifacts import RunContext

    assert isinstance(ctx, RunContext)
    lines = [f"run {ctx.name}: done"]
    for stage, manifest in manifests.items():
        lines.append(
            f"  {stage:<8} {manifest.get('wall_time_s', 0):8.1f} s  {ctx.stage_dir(stage)}"
        )
    if "export" in manifests:
        lines.append(f"  bundle:  {ctx.export_dir}")
    if "report" in manifests:
        lines.append(f"  report:  {ctx.report_dir / 'report.html'}")
    print("\n".join(lines))


def _schema(args: argparse.Namespace) -> int:
    from distill.config import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    handlers = {"validate": _validate, "run": _run, "schema": _schema}
    try:
        return handlers[args.command](args)
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
