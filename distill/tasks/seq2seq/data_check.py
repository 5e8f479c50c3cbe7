"""What ``distill validate`` checks of a seq2seq data file before any compute: the columns
the data stage will read, against the file's header; a nested column (``translation.en``)
is looked for by the column that holds it (``translation``)."""

from __future__ import annotations

from pathlib import Path

from distill.config import DataConfig
from distill.data.readers import read_header, table_format
from distill.errors import DataError
from distill.tasks.seq2seq.pairs import table_column


def data_columns(data: DataConfig, path: Path) -> tuple[str, dict[str, str]] | None:
    """The format of a local data file and the columns the data stage reads from it (recipe
    key -> column, a nested name by its first part); None for an unknown extension."""
    from distill.tasks.seq2seq.task import Seq2Seq

    fmt = table_format(path, data)
    if fmt is None:
        return None
    try:
        header = read_header(path, fmt, data.encoding) or []
    except (DataError, OSError):  # an unreadable file is reported by the shared checks
        header = []
    return fmt, {
        key: table_column(column, header) if header else column.split(".", 1)[0]
        for key, column in Seq2Seq.named_columns(data).items()
    }
