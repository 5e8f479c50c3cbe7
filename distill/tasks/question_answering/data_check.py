"""What ``distill validate`` checks of a question-answering data file before any compute:
the columns the data stage will read, against the file's header.

A SQuAD JSON document names no columns (``data -> paragraphs -> qas``); neither does a JSON
document in general, whose records only a full read tells apart from a SQuAD document: both
are left to the data stage.
"""

from __future__ import annotations

from pathlib import Path

from distill.config import DataConfig
from distill.data.readers import table_format


def data_columns(data: DataConfig, path: Path) -> tuple[str, dict[str, str]] | None:
    """The format of a local data file and the columns the data stage reads from it (recipe
    key -> column); None for a JSON document (a SQuAD one has no columns) or an unknown
    extension."""
    from distill.tasks.question_answering.task import QuestionAnswering

    fmt = table_format(path, data)
    if fmt is None or fmt == "json":
        return None
    return fmt, QuestionAnswering.named_columns(data)
