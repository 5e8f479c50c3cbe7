"""Command line: ``distill validate | run | schema | predict | generate``.

``predict`` and ``generate`` run an exported bundle: the one bundle reader
(:mod:`distill.export.bundle`) verifies it and says its task, whose ``command`` must be the
verb the user ran, and the task's runner module (``Task.runner``) serves it. Neither path
may import torch or transformers, so every heavy import stays inside the other handlers.
Nothing here names a task: the registry (:mod:`distill.tasks`) does.

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
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import DistillError

if TYPE_CHECKING:
    from distill.artifacts import RunContext
    from distill.export.bundle import Bundle

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
    from distill.export.bundle import bundles_of
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

    schema = commands.add_parser(
        "schema", help="write the recipe JSON Schema (or, with --markdown, its reference page)"
    )
    schema.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    schema.add_argument(
        "--markdown",
        action="store_true",
        help="the recipe reference in Markdown (docs/recipe-reference.md) instead of the schema",
    )

    predict = commands.add_parser(
        "predict",
        help="classify texts or find their entities with an exported bundle "
        "(onnxruntime only, no torch)",
        description=(
            "Classify texts, or find their named entities, with an exported bundle "
            "(export/<name>/). Texts come from the "
            "arguments, from --file (one per line), or from stdin when neither is given "
            "(or for '-'). Prints one line per input line, in input order: "
            "label<TAB>probability<TAB>every label=probability for a classifier, "
            "type:start-end:text per entity, tab-separated (empty: none), for an NER bundle "
            "(--json: one JSON object). Input streams through in batches: each batch's lines "
            "are printed before the next batch is read, so memory stays flat on input of any "
            "size. "
            "A line that is not UTF-8 or is blank is not predicted: its output line is "
            '\'error<TAB>WHERE: why\' (--json: {"line": N, "source": ..., "error": ...}), '
            "every other line is still predicted, and the exit status is 2."
        ),
    )
    predict.add_argument("bundle", type=Path, help="bundle folder, e.g. export/<name>")
    predict.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts to predict ('-' reads stdin)"
    )
    predict.add_argument(
        "-f", "--file", type=Path, help="read texts from this file, one per line ('-': stdin)"
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help="print JSON lines: text, label, probability, probabilities per label "
        "(NER: text, entities with type, text, start, end, score)",
    )
    predict.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: onnxruntime's choice; more than the "
        "available cores is capped at them, with a note)",
    )
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="texts per onnxruntime call (default: 32)",
    )
    predict.add_argument(
        "--aggregation",
        metavar="STRATEGY",
        help="for a bundle that finds entities: how sub-tokens make entities, overriding "
        "the bundle's manifest: first, average or max (whole words; the default is first) "
        "or simple (each sub-token's own tag: an entity may split a word)",
    )

    generate = commands.add_parser(
        "generate",
        help="continue a prompt with an exported bundle whose task generates text "
        "(onnxruntime only, no torch)",
        description=(
            f"Continue PROMPT with a bundle whose task generates text ({bundles_of('generate')}"
            "). Greedy by default; --sample draws tokens (reproducibly with --seed). Prints "
            "the prompt and its continuation, or only the new text with --only-new. The "
            "prompt (UTF-8 text) is never cut: the prompt's tokens plus --max-new-tokens must "
            "fit the model's positions (config.json), else nothing is generated and the exit "
            "status is 2."
        ),
    )
    generate.add_argument("bundle", type=Path, help="bundle folder, e.g. export/<name>")
    generate.add_argument("prompt", help="the text to continue ('-' reads it from stdin)")
    generate.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=32,
        help="tokens to generate at most (default: 32; fewer when the model ends the text)",
    )
    decoding = generate.add_mutually_exclusive_group()
    decoding.add_argument(
        "--greedy",
        dest="sample",
        action="store_false",
        help="always take the most likely token (the default)",
    )
    decoding.add_argument("--sample", dest="sample", action="store_true", help="sample each token")
    generate.set_defaults(sample=False)
    generate.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="--sample: softmax temperature (a finite number > 0; default 1)",
    )
    generate.add_argument(
        "--top-k", type=int, default=None, help="--sample: keep the k most likely tokens"
    )
    generate.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="--sample: keep the most likely tokens up to this probability mass (0 < p <= 1)",
    )
    generate.add_argument(
        "--seed", type=int, default=None, help="--sample: random seed (same seed, same text)"
    )
    generate.add_argument(
        "--only-new", action="store_true", help="print only the generated text, not the prompt"
    )
    generate.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: onnxruntime's choice; more than the "
        "available cores is capped at them, with a note)",
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
        # transformers 5 draws a bar for every weight load and save; distill shows its own.
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _validate(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.preflight import check_sources

    recipe, recipe_dir = load_recipe(args.recipe, args.overrides)
    notes = check_sources(recipe, recipe_dir, args.recipe)
    print(
        f"{args.recipe}: ok (run {recipe.name!r}, task {recipe.task}, student init {recipe.student.init})"
    )
    for note in notes:
        print(f"  note: {note}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from distill.artifacts import RunContext
    from distill.config import load_recipe
    from distill.pipeline import run_pipeline
    from distill.preflight import check_sources

    recipe, recipe_dir = load_recipe(args.recipe, args.overrides)
    for note in check_sources(recipe, recipe_dir, args.recipe):
        log.info("not checked before the run: %s", note)
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
    """A few columns of the report's comparison table, as plain text (the task's choice)."""
    from distill.tasks import task_of_report

    return task_of_report(report).summary_lines(report)


def _report(args: argparse.Namespace) -> int:
    from distill.report.reports import compare

    first, second = args.compare
    out = compare(first, second, args.output)
    print(f"comparison written to {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from distill.bench import run_from_args

    return run_from_args(args)


def _schema(args: argparse.Namespace) -> int:
    from distill.config import recipe_json_schema
    from distill.recipe_reference import recipe_reference_markdown

    schema = recipe_json_schema()
    text = (
        recipe_reference_markdown(schema) if args.markdown else json.dumps(schema, indent=2) + "\n"
    )
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _bundle_runner(args: argparse.Namespace) -> tuple[Bundle, Any]:
    """The verified bundle ``args.bundle`` and its task's runner module (torch-free).

    A bundle of a task that another verb runs is refused, with a hint naming that verb."""
    from distill.export.bundle import read_bundle

    bundle = read_bundle(args.bundle, command=args.command)
    return bundle, bundle.task.module(bundle.task.runner)


def _predict(args: argparse.Namespace) -> int:
    """One output line per input line, streamed a batch at a time; a line that cannot be
    predicted gets an error line."""
    from distill.errors import DataError
    from distill.predict_lines import input_lines, quiet_broken_pipe, write_predictions
    from distill.serving_args import capped_threads

    bundle, runner = _bundle_runner(args)
    options = {} if args.aggregation is None else {"aggregation": args.aggregation}
    if options:
        # The strategies are the runner's to name: a runner without them groups no tokens.
        strategies = getattr(runner, "AGGREGATIONS", None)
        if strategies is None:
            raise DataError(
                f"{args.bundle}: --aggregation applies to bundles that find entities; this "
                f"one's task is {bundle.task.name!r}"
            )
        if args.aggregation not in strategies:
            raise DataError(
                f"--aggregation must be one of {', '.join(strategies)}, not {args.aggregation!r}"
            )
    predictor = runner.load_bundle(bundle, threads=capped_threads(args.threads), **options)
    with ExitStack() as stack:
        inputs = input_lines(args.texts, args.file, sys.stdin, stack)
        try:
            tally = write_predictions(
                inputs,
                lambda texts: predictor.iter_predict(texts, batch_size=args.batch_size),
                sys.stdout,
                batch_size=args.batch_size,
                as_json=args.json,
            )
        except BrokenPipeError:  # e.g. `distill predict ... | head`: stop quietly
            quiet_broken_pipe()
            return 0
    if tally.failed:
        raise DataError(tally.summary())
    return 0


def _generate(args: argparse.Namespace) -> int:
    from distill.errors import DataError
    from distill.predict_lines import quiet_broken_pipe
    from distill.serving_args import capped_threads, read_prompt, sampling_problems

    problems = sampling_problems(args)
    if problems:
        raise DataError("; ".join(problems))
    prompt = read_prompt(args.prompt)

    bundle, runner = _bundle_runner(args)
    lm = runner.load_bundle(bundle, threads=capped_threads(args.threads))
    try:
        output = runner.generate(
            lm,
            prompt,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.sample,
            temperature=1.0 if args.temperature is None else args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            max_new_tokens_name="--max-new-tokens",
        )
    except ValueError as exc:  # e.g. a prompt the tokenizer turns into no tokens
        raise DataError(f"{args.bundle}: {exc}") from None
    if args.only_new:
        text = output.text
    else:
        # Decoded together with the prompt, the new text gets the spacing the tokenizer gives
        # it after the prompt (decoded alone, its first word loses any leading space).
        whole = lm.tokenizer.decode(output.prompt_ids + output.token_ids, skip_special_tokens=True)
        start = lm.tokenizer.decode(output.prompt_ids, skip_special_tokens=True)
        text = prompt + (whole[len(start) :] if whole.startswith(start) else " " + output.text)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
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
    _configure_logging(args.quiet, transformers_logging=args.command not in ("predict", "generate"))
    handlers = {
        "validate": _validate,
        "run": _run,
        "report": _report,
        "bench": _bench,
        "schema": _schema,
        "predict": _predict,
        "generate": _generate,
    }
    try:
        return handlers[args.command](args)
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
