"""Seq2seq's data: pairs read from every table format, every bad row reported at once with its
file, line and recipe key, deduplication, leakage, max_examples and unused, separate
validation/test files, seeded splits, and the data stage's files and metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.config import DataConfig
from distill.data import readers
from distill.data.problems import MAX_PROBLEMS
from distill.data.readers import MAX_TEXT_CHARS
from distill.errors import DataError
from distill.pipeline.artifacts import RunContext
from distill.tasks.seq2seq.files import read_split
from distill.tasks.seq2seq.pairs import build_pair_splits, read_pairs
from distill.tasks.seq2seq.stages import data as data_stage

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
GERMAN = ["eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn"]


def config(path: Path | str, **overrides: Any) -> DataConfig:
    return DataConfig(path=str(path), **{"source_column": "en", "target_column": "de", **overrides})


def rows(count: int) -> list[dict[str, Any]]:
    """``count`` distinct pairs: "one two" -> "eins zwei" and so on, ids r0, r1, ..."""
    return [
        {
            "id": f"r{i}",
            "en": f"{WORDS[i % 10]} {WORDS[i // 10 % 10]}",
            "de": f"{GERMAN[i % 10]} {GERMAN[i // 10 % 10]}",
        }
        for i in range(count)
    ]


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    """``records`` in the format of ``path``'s extension (CSV/TSV with a header)."""
    if path.suffix in (".csv", ".tsv"):
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(
                handle,
                fieldnames=list(records[0]),
                delimiter="\t" if path.suffix == ".tsv" else ",",
            )
            writer.writeheader()
            writer.writerows(records)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def read(path: Path, **overrides: Any) -> list[Any]:
    report: dict[str, Any] = {"read": {}, "texts_truncated": 0}
    return read_pairs(path.name, config(path, **overrides), path.parent, "data.path", report)


def error_of(path: Path, **overrides: Any) -> str:
    with pytest.raises(DataError) as info:
        read(path, **overrides)
    return str(info.value)


def splits_of(path: Path, seed: int = 0, **overrides: Any) -> tuple[dict[str, Any], dict]:
    return build_pair_splits(config(path.name, **overrides), path.parent, seed)


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_format_reads_the_same_pairs_with_file_line_ids(tmp_path: Path, suffix: str) -> None:
    records = rows(3)
    records[1]["en"] = '  two, "quoted"\tone  '
    path = write(tmp_path / f"pairs{suffix}", records)
    pairs = read(path)
    assert [(p.source, p.target) for p in pairs] == [
        ("one one", "eins eins"),
        ('two, "quoted"\tone', "zwei eins"),
        ("three one", "drei eins"),
    ]
    first = 2 if suffix in (".csv", ".tsv") else 1  # a CSV's first pair is on line 2
    assert [p.example_id for p in pairs] == [f"pairs{suffix}:{first + i}" for i in range(3)]


def test_a_hub_dataset_is_read_through_the_shared_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []

    def hub(dataset_id: str, split: str, key: str) -> tuple[list[str], list]:
        asked.append((dataset_id, split, key))
        return ["en", "de"], [(1, {"en": "one", "de": "eins"}), (2, {"en": 2, "de": "zwei"})]

    monkeypatch.setattr(readers, "_read_hub", hub)
    data = config("org/pairs", hub_split="validation")
    report: dict[str, Any] = {"read": {}, "texts_truncated": 0}
    with pytest.raises(DataError) as info:
        read_pairs("org/pairs", data, tmp_path, "data.test_path", report)
    assert asked == [("org/pairs", "validation", "data.test_path")]
    assert str(info.value) == (
        "org/pairs (data.test_path): 1 bad row(s):\n"
        "  - pairs: row 2: column 'en' (data.source_column): the source is int 2, not a string"
    )


def test_the_id_column_gives_the_ids(tmp_path: Path) -> None:
    records = rows(3)
    records[2]["id"] = 7  # a number is a fine id
    pairs = read(write(tmp_path / "p.jsonl", records), id_column="id")
    assert [p.example_id for p in pairs] == ["r0", "r1", "7"]


def test_a_missing_column_names_its_key_and_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", rows(2))
    message = error_of(path, target_column="fr")
    assert message == (
        f"{path} (data.path): data.target_column = 'fr': no such column; "
        "the columns are ['id', 'en', 'de']"
    )
    message = error_of(path, source_column="src", id_column="key")
    assert "data.source_column = 'src': no such column; data.id_column = 'key': no such" in message


def test_every_bad_row_is_reported_at_once_with_file_line_and_key(tmp_path: Path) -> None:
    records = rows(6)
    records[1]["de"] = "   "
    records[2]["en"] = ""
    records[3]["de"] = 42
    records[4]["en"] = None
    del records[5]["de"]
    path = write(tmp_path / "p.jsonl", records)
    assert error_of(path) == (
        f"{path} (data.path): 5 bad row(s):\n"
        "  - p.jsonl: line 2: column 'de' (data.target_column): empty target\n"
        "  - p.jsonl: line 3: column 'en' (data.source_column): empty source\n"
        "  - p.jsonl: line 4: column 'de' (data.target_column): the target is int 42, "
        "not a string\n"
        "  - p.jsonl: line 5: column 'en' (data.source_column): empty source\n"
        "  - p.jsonl: line 6: column 'de' (data.target_column): no value (the row has no 'de')"
    )


def test_bad_rows_of_a_csv_and_a_parquet_file_name_lines_and_rows(tmp_path: Path) -> None:
    records = rows(3)
    records[2]["de"] = ""
    csv_path = write(tmp_path / "p.csv", records)
    assert "p.csv: line 4: column 'de' (data.target_column): empty target" in error_of(csv_path)
    parquet = tmp_path / "p.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"en": i, "de": [None, "x"][i]} for i in range(2)]), parquet
    )
    assert error_of(parquet) == (
        f"{parquet} (data.path): 3 bad row(s):\n"
        "  - p.parquet: row 1: column 'en' (data.source_column): the source is int 0, not a string\n"
        "  - p.parquet: row 1: column 'de' (data.target_column): empty target\n"
        "  - p.parquet: row 2: column 'en' (data.source_column): the source is int 1, not a string"
    )


def test_more_than_max_problems_are_listed_then_counted(tmp_path: Path) -> None:
    records = [{"en": "", "de": "x"} for _ in range(MAX_PROBLEMS + 5)]
    message = error_of(write(tmp_path / "p.jsonl", records))
    assert message.startswith(f"{tmp_path / 'p.jsonl'} (data.path): 25 bad row(s):\n")
    assert message.count("empty source") == MAX_PROBLEMS
    assert message.endswith(
        "line 20: column 'en' (data.source_column): empty source\n  - ... and 5 more"
    )


def test_empty_and_repeated_ids_are_bad_rows(tmp_path: Path) -> None:
    records = rows(4)
    records[1]["id"] = "r0"
    records[3]["id"] = ""
    message = error_of(write(tmp_path / "p.csv", records), id_column="id")
    assert "  - p.csv: line 5: column 'id' (data.id_column): empty id\n" in message
    assert message.endswith(
        "  - p.csv: line 3: column 'id' (data.id_column): duplicate id 'r0' (first at p.csv: line 2)"
    )


def test_a_text_over_max_text_chars_is_cut_and_counted(tmp_path: Path) -> None:
    records = rows(2)
    records[1]["de"] = "x" * (MAX_TEXT_CHARS + 5)
    report: dict[str, Any] = {"read": {}, "texts_truncated": 0}
    path = write(tmp_path / "p.jsonl", records)
    pairs = read_pairs(path.name, config(path), tmp_path, "data.path", report)
    assert len(pairs[1].target) == MAX_TEXT_CHARS and pairs[1].source == "two one"
    assert report == {"read": {"data.path": 2}, "texts_truncated": 1}


def test_an_empty_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("en,de\n", encoding="utf-8")
    assert error_of(path) == f"{path} (data.path): the data set is empty"


def test_validate_checks_the_columns_of_the_data_file(tmp_path: Path, capsys: Any) -> None:
    """`distill validate` reads the file's header: a nested column by its first part."""
    from seq2seq_models import WORDS, build_tiny_t5

    from distill.cli import main

    build_tiny_t5(tmp_path / "t5", WORDS)
    write(tmp_path / "pairs.jsonl", [{"translation": {"en": "red", "de": "dog"}, "id": "a"}])
    recipe = tmp_path / "recipe.toml"
    for source, code in (("translation.en", 0), ("text.en", 2)):
        recipe.write_text(
            f'name = "v"\ntask = "seq2seq"\n[data]\npath = "pairs.jsonl"\n'
            f'source_column = "{source}"\ntarget_column = "translation.de"\nid_column = "id"\n'
            '[teacher]\nmodel = "t5"\n[student]\nnum_layers = 1\n',
            encoding="utf-8",
        )
        assert main(["validate", str(recipe)]) == code
    assert "'text' (data.source_column)" in capsys.readouterr().err
    # A flat column whose name holds a dot is itself, not a nested name.
    (tmp_path / "dotted.csv").write_text("src.text,tgt.text\nred,dog\n", encoding="utf-8")
    from distill.tasks.seq2seq.data_check import data_columns

    dotted = config(tmp_path / "dotted.csv", source_column="src.text", target_column="tgt.text")
    assert data_columns(dotted, tmp_path / "dotted.csv") == (
        "csv",
        {"data.source_column": "src.text", "data.target_column": "tgt.text"},
    )


# --- splitting --------------------------------------------------------------------------------


def test_splits_take_their_shares_and_the_same_seed_gives_the_same_splits(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", rows(40))
    splits, report = splits_of(path, seed=3)
    assert {name: len(s) for name, s in splits.items()} == {
        "train": 28,
        "validation": 4,
        "test": 8,
        "unused": 0,
    }
    all_ids = [i for s in splits.values() for i in s.ids]
    assert sorted(all_ids) == sorted(f"p.jsonl:{i}" for i in range(1, 41))
    assert splits_of(path, seed=3)[0] == splits
    assert splits_of(path, seed=4)[0]["test"].ids != splits["test"].ids
    assert report == {
        "read": {"data.path": 40},
        "texts_truncated": 0,
        "duplicates_dropped": 0,
        "subsampled_from": None,
        "train_overlap_dropped": 0,
        "unused_overlap_dropped": 0,
    }


def test_duplicate_pairs_are_dropped_and_leaked_sources_leave_training(tmp_path: Path) -> None:
    records = rows(20)
    records += [
        {"id": "dup", "en": "ONE  one", "de": "eins eins"},  # r0 again (case, spaces)
        {"id": "other", "en": "one one", "de": "ein ein"},  # r0's source, another target
    ]
    path = write(tmp_path / "p.jsonl", records)
    splits, report = splits_of(path, seed=1, id_column="id")
    assert report["duplicates_dropped"] == 1
    assert "dup" not in [i for s in splits.values() for i in s.ids]
    # seed 1 puts "other" in validation: r0, the same source, leaves training
    assert splits["validation"].ids == ["r1", "r19", "other"]
    assert report["train_overlap_dropped"] == 1
    assert "r0" not in splits["train"].ids and "one one" not in splits["train"].sources
    assert len(splits["train"]) == 21 - 3 - 5 - 1
    splits, report = splits_of(path, seed=0, id_column="id")  # both copies in training
    assert report["train_overlap_dropped"] == 0 and {"r0", "other"} <= set(splits["train"].ids)


def test_a_leaked_source_is_dropped_from_training_and_unused(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", rows(30))
    test_rows = [{"id": "t0", "en": "one  ONE", "de": "anders"}, rows(30)[29] | {"id": "t1"}]
    write(tmp_path / "test.jsonl", test_rows)
    write(tmp_path / "dev.csv", rows(35)[30:])
    splits, report = splits_of(
        tmp_path / "train.jsonl",
        id_column="id",
        test_path="test.jsonl",
        validation_path="dev.csv",
        max_examples=20,
    )
    assert splits["test"].ids == ["t0", "t1"]
    assert splits["validation"].ids == ["r30", "r31", "r32", "r33", "r34"]
    assert report["read"] == {"data.path": 30, "data.test_path": 2, "data.validation_path": 5}
    assert report["subsampled_from"] == 30
    # seed 0: max_examples kept r0 and r29, both sources of test: they leave training
    assert (report["train_overlap_dropped"], report["unused_overlap_dropped"]) == (2, 0)
    assert len(splits["train"]) == 18 and len(splits["unused"]) == 10
    assert {"r0", "r29"}.isdisjoint(splits["train"].ids + splits["unused"].ids)
    # seed 2: max_examples left r0 or r29 out: it leaves unused (no transfer source leaks)
    splits, report = splits_of(
        tmp_path / "train.jsonl",
        seed=2,
        id_column="id",
        test_path="test.jsonl",
        validation_path="dev.csv",
        max_examples=20,
    )
    assert (report["train_overlap_dropped"], report["unused_overlap_dropped"]) == (1, 1)
    assert len(splits["train"]) == 19 and len(splits["unused"]) == 9
    assert {"r0", "r29"}.isdisjoint(splits["train"].ids + splits["unused"].ids)


def test_without_deduplicate_a_leak_is_an_error_naming_the_ids(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", rows(10))
    write(tmp_path / "test.csv", rows(10)[3:4])
    with pytest.raises(DataError) as info:
        splits_of(tmp_path / "train.csv", id_column="id", test_path="test.csv", deduplicate=False)
    assert str(info.value) == (
        "1 training source(s) also appear in validation/test (r3 = r3); "
        "set data.deduplicate = true to drop them from training"
    )


def test_max_examples_samples_pairs_and_the_rest_is_unused(tmp_path: Path) -> None:
    path = write(tmp_path / "p.parquet", rows(50))
    splits, report = splits_of(path, seed=1, max_examples=20, id_column="id")
    assert report["subsampled_from"] == 50
    assert {name: len(s) for name, s in splits.items()} == {
        "train": 14,
        "validation": 2,
        "test": 4,
        "unused": 30,
    }
    used = splits["train"].ids + splits["validation"].ids + splits["test"].ids
    assert sorted(used + splits["unused"].ids, key=lambda i: int(i[1:])) == [
        f"r{i}" for i in range(50)
    ]
    assert splits["unused"].ids == sorted(splits["unused"].ids, key=lambda i: int(i[1:]))
    again, _ = splits_of(path, seed=1, max_examples=20, id_column="id")
    other, _ = splits_of(path, seed=2, max_examples=20, id_column="id")
    assert again == splits and other["unused"].ids != splits["unused"].ids


def test_an_empty_split_is_refused_with_the_key_to_change(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", rows(3))
    write(tmp_path / "dev.jsonl", rows(3))
    with pytest.raises(DataError) as info:
        splits_of(tmp_path / "train.jsonl", validation_path="dev.jsonl", test_path="dev.jsonl")
    assert str(info.value) == (
        "the train split is empty (3 source(s) also in validation/test dropped); add data or "
        "change data.validation_fraction / data.test_fraction"
    )
    path = write(tmp_path / "one.jsonl", rows(1))
    with pytest.raises(DataError, match="the train split is empty; add data"):
        splits_of(path)


# --- the stage --------------------------------------------------------------------------------


def test_the_data_stage_writes_the_splits_and_its_metrics(tmp_path: Path) -> None:
    records = rows(30)
    records[0]["en"] = "a much longer source sentence than the others"
    write(tmp_path / "p.csv", records)
    ctx = RunContext(name="t", seed=0, task="seq2seq", workdir=tmp_path, recipe_dir=tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    metrics = data_stage.run(ctx, {}, out, data=config("p.csv", id_column="id", max_examples=20))
    assert sorted(p.name for p in out.iterdir()) == [
        "test.jsonl",
        "train.jsonl",
        "unused.jsonl",
        "validation.jsonl",
    ]
    assert metrics["sizes"] == {"train": 14, "validation": 2, "test": 4}
    assert metrics["unused_rows"] == 10
    assert metrics["cleaning"]["subsampled_from"] == 30
    splits = {name: read_split(out, name) for name in ("train", "validation", "test", "unused")}
    assert sum(len(s) for s in splits.values()) == 30
    sources = [s for split in splits.values() for s in split.sources]
    assert max(len(s) for s in sources) == 45
    lengths = metrics["lengths"]
    assert set(lengths) == {"train", "validation", "test", "unused"}
    for name, split in splits.items():
        assert lengths[name]["source"]["max"] == max(len(s) for s in split.sources)
        assert lengths[name]["target"]["mean"] == round(
            sum(len(t) for t in split.targets) / len(split), 2
        )
    assert max(lengths[name]["source"]["max"] for name in splits) == 45
    train = splits["train"]
    first = {r["id"]: r for r in records}[train.ids[0]]
    assert (train.sources[0], train.targets[0]) == (first["en"], first["de"])
    json.dumps(metrics)  # the manifest holds them


def test_length_stats_of_no_text_are_none() -> None:
    assert data_stage.length_stats([]) == {"mean": None, "max": None}
    assert data_stage.length_stats(["ab", "abcd", "abc"]) == {"mean": 3.0, "max": 4}


def test_nested_columns_read_a_field_of_a_column_of_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hub translation sets (wmt16, opus_books) keep a pair in one column:
    ``{"translation": {"en": ..., "de": ...}}``; ``translation.en`` reads it."""

    def hub(dataset_id: str, split: str, key: str) -> tuple[list[str], list]:
        return ["translation"], [
            (1, {"translation": {"en": "one", "de": "eins"}}),
            (2, {"translation": {"en": "two"}}),
            (3, {"translation": "drei"}),
        ]

    monkeypatch.setattr(readers, "_read_hub", hub)
    data = config("wmt/pairs", source_column="translation.en", target_column="translation.de")
    report: dict[str, Any] = {"read": {}, "texts_truncated": 0}
    with pytest.raises(DataError) as info:
        read_pairs("wmt/pairs", data, tmp_path, "data.path", report)
    assert str(info.value) == (
        "wmt/pairs (data.path): 3 bad row(s):\n"
        "  - pairs: row 2: column 'translation.de' (data.target_column): no value (the row has "
        "no 'translation.de')\n"
        "  - pairs: row 3: column 'translation.en' (data.source_column): no value (the row has "
        "no 'translation.en')\n"
        "  - pairs: row 3: column 'translation.de' (data.target_column): no value (the row has "
        "no 'translation.de')"
    )
    path = write(tmp_path / "nested.jsonl", [{"translation": {"en": "a b", "de": "c d"}}])
    pairs = read(path, source_column="translation.en", target_column="translation.de")
    assert [(p.source, p.target) for p in pairs] == [("a b", "c d")]
    missing = error_of(path, source_column="text.en", target_column="translation.de")
    assert "data.source_column = 'text.en': no such column" in missing


def test_validate_looks_for_a_nested_column_by_its_first_part(tmp_path: Path) -> None:
    from distill.tasks.seq2seq.data_check import data_columns

    path = write(tmp_path / "pairs.jsonl", [{"translation": {"en": "a"}, "de": "b", "id": "c"}])
    data = config(path, source_column="translation.en", target_column="de", id_column="id")
    assert data_columns(data, path) == (
        "jsonl",
        {"data.source_column": "translation", "data.target_column": "de", "data.id_column": "id"},
    )
