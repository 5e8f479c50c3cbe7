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

from distill.cli_parser import build_parser
from distill.errors import DistillError

if TYPE_CHECKING:
    from distill.export.bundle import Bundle
    from distill.pipeline.artifacts import RunContext

log = logging.getLogger("distill")


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
    from distill.pipeline.preflight import check_sources

    recipe, recipe_dir = load_recipe(args.recipe, args.overrides)
    notes = check_sources(recipe, recipe_dir, args.recipe)
    print(
        f"{args.recipe}: ok (run {recipe.name!r}, task {recipe.task}, student init {recipe.student.init})"
    )
    for note in notes:
        print(f"  note: {note}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from distill.config import load_recipe
    from distill.pipeline.artifacts import RunContext
    from distill.pipeline.preflight import check_sources
    from distill.pipeline.stages import run_pipeline

    recipe, recipe_dir = load_recipe(args.recipe, args.overrides)
    for note in check_sources(recipe, recipe_dir, args.recipe):
        log.info("not checked before the run: %s", note)
    from distill.pipeline.distributed import current

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
    width = max([8, *map(len, manifests)])
    for stage, manifest in manifests.items():
        lines.append(
            f"  {stage:<{width}} {manifest.get('wall_time_s', 0):8.1f} s  {ctx.stage_dir(stage)}"
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
    from distill.timing.bench import run_from_args

    return run_from_args(args)


def _schema(args: argparse.Namespace) -> int:
    from distill.config import recipe_json_schema
    from distill.config.reference import recipe_reference_markdown

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


def _predict_options(args: argparse.Namespace, task: Any) -> dict[str, Any]:
    """The task-specific flags set on the command line, as ``load_bundle`` keywords; a flag
    that ``task``'s bundles do not take, or a value outside its choices, is an error."""
    from distill.cli_parser import predict_options
    from distill.errors import DataError

    own = {option.name for option in task.predict_options}
    options = {}
    for option in predict_options():
        value = getattr(args, option.name, None)
        if value is None:
            continue
        if option.name not in own:
            raise DataError(
                f"{args.bundle}: {option.flag} applies to {option.applies_to}; this "
                f"one's task is {task.name!r}"
            )
        if option.choices and value not in option.choices:
            raise DataError(
                f"{option.flag} must be one of {', '.join(option.choices)}, not {value!r}"
            )
        options[option.name] = value
    return options


def _predict(args: argparse.Namespace) -> int:
    """One output line per input line, streamed a batch at a time; a line that cannot be
    predicted gets an error line."""
    from distill.errors import DataError
    from distill.serving.arguments import capped_threads
    from distill.serving.lines import input_lines, quiet_broken_pipe, write_predictions

    bundle, runner = _bundle_runner(args)
    options = _predict_options(args, bundle.task)
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
    from distill.serving.arguments import capped_threads, read_prompt, sampling_problems
    from distill.serving.lines import quiet_broken_pipe

    problems = sampling_problems(args)
    if args.prompt is not None and args.file is not None:
        problems.append("give PROMPT or --file (one input a line), not both")
    elif args.prompt is None and args.file is None:
        problems.append("give PROMPT (or --file, one input a line)")
    if problems:
        raise DataError("; ".join(problems))
    prompts = [read_prompt(args.prompt)] if args.file is None else _generate_inputs(args.file)

    bundle, runner = _bundle_runner(args)
    options = _generate_options(args, bundle.task, runner)
    lm = runner.load_bundle(bundle, threads=capped_threads(args.threads))
    try:
        outputs = _generate_outputs(args, runner, lm, prompts, options)
    except ValueError as exc:  # e.g. a prompt the tokenizer turns into no tokens
        raise DataError(f"{args.bundle}: {exc}") from None
    try:
        for prompt, output in zip(prompts, outputs, strict=True):
            text = _generated_text(args, lm, prompt, output)
            print(text if args.file is None else " ".join(text.splitlines()))
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
    return 0


def _generate_inputs(file: Path) -> list[str]:
    """``generate --file``'s inputs, one a line ('-': stdin); a line that is not UTF-8 text
    or is blank is an error naming it."""
    from distill.errors import DataError
    from distill.serving.lines import input_lines

    with ExitStack() as stack:
        lines = list(input_lines([], file, sys.stdin, stack))
    bad = [f"{line.where}: {line.error}" for line in lines if line.text is None]
    if bad:
        raise DataError(f"{len(bad)} input line(s) cannot be used: " + "; ".join(bad[:5]))
    if not lines:
        raise DataError(f"{file}: no input lines")
    return [line.text for line in lines if line.text is not None]


def _generate_options(args: argparse.Namespace, task: Any, runner: Any) -> dict[str, Any]:
    """Flags that only some runners' ``generate`` takes (``--num-beams``), as keywords; one
    that this bundle's runner does not take is an error naming the flag."""
    import inspect

    from distill.errors import DataError

    if args.num_beams is None:
        return {}
    if "num_beams" not in inspect.signature(runner.generate).parameters:
        raise DataError(
            f"{args.bundle}: --num-beams applies to bundles decoded by beam search; this "
            f"one's task is {task.name!r}"
        )
    return {"num_beams": args.num_beams}


def _generate_outputs(
    args: argparse.Namespace, runner: Any, lm: Any, prompts: list[str], options: dict[str, Any]
) -> list[Any]:
    """The runner's output for each prompt: in batches through its ``generate_many`` when it
    has one (and greedy or beam decoding is asked), else one ``generate`` call each."""
    if len(prompts) > 1 and not args.sample and hasattr(runner, "generate_many"):
        return runner.generate_many(
            lm,
            prompts,
            max_new_tokens=args.max_new_tokens,
            max_new_tokens_name="--max-new-tokens",
            **options,
        )
    return [
        runner.generate(
            lm,
            prompt,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.sample,
            temperature=1.0 if args.temperature is None else args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            max_new_tokens_name="--max-new-tokens",
            **options,
        )
        for prompt in prompts
    ]


def _generated_text(args: argparse.Namespace, lm: Any, prompt: str, output: Any) -> str:
    """What ``generate`` prints for one output: the prompt and its continuation, or only the
    new text (with --only-new, or from a runner whose output does not continue its input,
    such as a translation: ``continues_prompt`` False)."""
    if args.only_new or not getattr(output, "continues_prompt", True):
        return output.text
    # Decoded together with the prompt, the new text gets the spacing the tokenizer gives
    # it after the prompt (decoded alone, its first word loses any leading space).
    whole = lm.tokenizer.decode(output.prompt_ids + output.token_ids, skip_special_tokens=True)
    start = lm.tokenizer.decode(output.prompt_ids, skip_special_tokens=True)
    return prompt + (whole[len(start) :] if whole.startswith(start) else " " + output.text)


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
