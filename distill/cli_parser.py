"""The grammar of the ``distill`` command line: one small function per verb adds its
subcommand and arguments (:mod:`distill.cli` holds what each verb does).

Torch-free: ``predict`` and ``generate`` parse their arguments here before anything heavy
is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from distill.tasks.base import PredictHelp, PredictOption
from distill.wording import listed

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


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
    """The ``distill`` parser: one subcommand per verb, each added by its own function."""
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Knowledge distillation: teacher -> student -> ONNX int8 -> report.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_verb in (
        _validate_parser,
        _run_parser,
        _report_parser,
        _bench_parser,
        _schema_parser,
        _predict_parser,
        _generate_parser,
    ):
        add_verb(commands)
    return parser


def _validate_parser(commands: Subcommands) -> None:
    validate = commands.add_parser(
        "validate", help="check a recipe and its sources; computes nothing"
    )
    _recipe_args(validate)


def _run_parser(commands: Subcommands) -> None:
    from distill.pipeline.stages import STAGE_NAMES

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


def _report_parser(commands: Subcommands) -> None:
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


def _bench_parser(commands: Subcommands) -> None:
    from distill.timing import bench

    bench.add_arguments(
        commands.add_parser("bench", help="CPU latency of a run's models, side by side")
    )


def _schema_parser(commands: Subcommands) -> None:
    schema = commands.add_parser(
        "schema", help="write the recipe JSON Schema (or, with --markdown, its reference page)"
    )
    schema.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    schema.add_argument(
        "--markdown",
        action="store_true",
        help="the recipe reference in Markdown (docs/recipe-reference.md) instead of the schema",
    )


def _predict_parser(commands: Subcommands) -> None:
    helps = predict_helps()
    does = listed([h.does for h in helps], "or")
    predict = commands.add_parser(
        "predict",
        help=f"{does} with an exported bundle (onnxruntime only, no torch)",
        description=(
            f"{does[0].upper()}{does[1:]} with an exported bundle "
            "(export/<name>/). Texts come from the "
            "arguments, from --file (one per line), or from stdin when neither is given "
            "(or for '-'). Prints one line per input line, in input order: "
            f"{', '.join(h.line for h in helps)} "
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
        help="print JSON lines: "
        + " ".join(f"({h.json})" if i else h.json for i, h in enumerate(helps)),
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
    for option in predict_options():
        predict.add_argument(
            option.flag, dest=option.name, metavar=option.metavar, help=option.help
        )


def _generate_parser(commands: Subcommands) -> None:
    from distill.export.bundle import bundles_of

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
            "status is 2. A bundle that maps a text to another (seq2seq: translation, "
            "summarization) prints only its output, decoded greedily or by beam search "
            "(--num-beams; default: the bundle's); its source is cut to the bundle's max_length "
            "tokens, with a warning. --file gives one input a line."
        ),
    )
    generate.add_argument("bundle", type=Path, help="bundle folder, e.g. export/<name>")
    generate.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="the text to continue, or the source to translate ('-' reads it from stdin); "
        "omit it with --file",
    )
    generate.add_argument(
        "--file",
        type=Path,
        default=None,
        help="read the inputs from this file instead, one a line ('-': stdin); prints one "
        "output line per input, in input order (a newline inside an output is printed as a "
        "space)",
    )
    generate.add_argument(
        "--num-beams",
        type=_positive_int,
        default=None,
        metavar="N",
        help="beam size, for bundles that decode by beam search (seq2seq; default: the "
        "bundle's own)",
    )
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


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return number


def predict_options() -> list[PredictOption]:
    """The task-specific flags of ``distill predict``: every task's, each flag once."""
    from distill.tasks import TASKS

    options: dict[str, PredictOption] = {}
    for task in TASKS.values():
        for option in task.predict_options:
            options.setdefault(option.flag, option)
    return list(options.values())


def predict_helps() -> list[PredictHelp]:
    """What ``distill predict --help`` says of each task that predict serves."""
    from distill.tasks import TASKS

    return [task.predict_help for task in TASKS.values() if task.predict_help is not None]
