"""Data loading, cleaning, splitting and every data error a user can hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.config import DataConfig
from distill.errors import DataError, DistillError
from distill.tasks.classification.data import build_splits


def config(path: Path | str, **overrides: object) -> DataConfig:
    return DataConfig(path=str(path), **overrides)


def write_csv(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def test_csv_is_split_stratified_disjoint_and_stable(sentiment_csv: Path) -> None:
    splits, labels, report = build_splits(config(sentiment_csv), sentiment_csv.parent, seed=3)
    assert labels == ["negative", "positive"]
    sizes = {name: len(split) for name, split in splits.items()}
    assert sizes == {"train": 84, "validation": 12, "test": 24, "unused": 0}
    all_ids = [i for split in splits.values() for i in split.ids]
    assert len(set(all_ids)) == 120  # disjoint and complete
    assert splits["train"].ids[0] == "reviews.csv:2"  # file name and line: stable across runs
    for split in (splits[n] for n in ("train", "validation", "test")):  # stratified
        assert np.bincount(split.labels).tolist() == [len(split) // 2] * 2
    again, _, _ = build_splits(config(sentiment_csv), sentiment_csv.parent, seed=3)
    assert again["test"].ids == splits["test"].ids
    other, _, _ = build_splits(config(sentiment_csv), sentiment_csv.parent, seed=4)
    assert other["test"].ids != splits["test"].ids
    assert report.stratified and report.duplicates_dropped == 0


def test_non_utf8_bytes_name_file_offset_and_encoding_key(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "tweets.csv", ["text,label", "Espa\u00f1a is great,positive"], encoding="latin-1"
    )
    with pytest.raises(DataError) as info:
        build_splits(config(path), tmp_path, seed=0)
    message = str(info.value)
    assert (
        str(path) in message
        and "0xf1" in message
        and "offset 15" in message
        and "line 2" in message
    )
    assert "data.encoding" in message
    rows = ["text,label"] + [f"Espa\u00f1a {i} good,{'a' if i % 2 else 'b'}" for i in range(40)]
    ok = write_csv(tmp_path / "latin.csv", rows, encoding="latin-1")
    splits, _, _ = build_splits(config(ok, encoding="latin-1"), tmp_path, seed=0)
    assert any("Espa\u00f1a" in t for t in splits["train"].texts)


def test_missing_column_lists_the_columns(sentiment_csv: Path) -> None:
    with pytest.raises(
        DataError, match=r"no column 'sentiment'; the columns are \['text', 'label'\]"
    ):
        build_splits(config(sentiment_csv, label_column="sentiment"), sentiment_csv.parent, seed=0)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="the file is empty"):
        build_splits(config(empty), tmp_path, seed=0)
    header = write_csv(tmp_path / "header.csv", ["text,label"])
    with pytest.raises(DataError, match="the data set is empty"):
        build_splits(config(header), tmp_path, seed=0)


def test_empty_texts_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = ["text,label"] + [f"text {i},{'a' if i % 2 else 'b'}" for i in range(40)] + [" ,a", ",b"]
    path = write_csv(tmp_path / "d.csv", rows)
    splits, _, report = build_splits(config(path), tmp_path, seed=0)
    assert report.empty_text_dropped == {"data.path": 2}
    assert sum(len(s) for s in splits.values()) == 40
    only_empty = write_csv(tmp_path / "e.csv", ["text,label", " ,a", ",b"])
    with pytest.raises(DataError, match="all 2 rows have empty text in column 'text'"):
        build_splits(config(only_empty), tmp_path, seed=0)


def test_single_class_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", ["text,label"] + [f"t {i},spam" for i in range(30)])
    with pytest.raises(DataError, match="single class .'spam'."):
        build_splits(config(path), tmp_path, seed=0)


def test_label_unseen_in_training_names_file_and_row(sentiment_csv: Path, tmp_path: Path) -> None:
    test_file = write_csv(tmp_path / "test.csv", ["text,label", "fine,positive", "meh,neutral"])
    with pytest.raises(DataError) as info:
        build_splits(config(sentiment_csv, test_path=str(test_file)), tmp_path, seed=0)
    message = str(info.value)
    assert "test.csv: line 3" in message and "'neutral'" in message and "test split" in message


def test_ragged_csv_row_names_file_and_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", ["text,label", "ok,a", "too,many,fields", "ok2,b"])
    with pytest.raises(DataError, match=r"r\.csv: line 3: 3 fields, the header has 2"):
        build_splits(config(path), tmp_path, seed=0)


def test_csv_header_with_a_repeated_column_name_is_refused_naming_its_positions(
    tmp_path: Path,
) -> None:
    lines = ["text,label,text"] + [f"row {i},{'ab'[i % 2]},other {i}" for i in range(40)]
    path = write_csv(tmp_path / "dup.csv", lines)
    with pytest.raises(DataError) as error:
        build_splits(config(path), tmp_path, seed=0)
    message = str(error.value)
    assert str(path) in message and "line 1" in message
    assert "'text' is columns 1, 3" in message and "'label'" not in message


def test_parquet_with_a_repeated_column_name_is_refused_naming_its_positions(
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array([f"row {i}" for i in range(40)]), pa.array(["a", "b"] * 20)]
    table = pa.Table.from_arrays([*columns, columns[0]], names=["text", "label", "text"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(
        DataError,
        match=r"dup\.parquet: the schema repeats column name\(s\): 'text' is columns 1, 3",
    ):
        build_splits(config(tmp_path / "dup.parquet"), tmp_path, seed=0)


def test_repeated_json_keys_are_refused_naming_file_line_and_key(tmp_path: Path) -> None:
    good = '{"text": "a", "label": "x"}'
    (tmp_path / "d.jsonl").write_text(f'{good}\n{{"text": "b", "label": "y", "text": "c"}}\n')
    with pytest.raises(DataError, match=r"d\.jsonl: line 2: the object repeats the key 'text'"):
        build_splits(config(tmp_path / "d.jsonl"), tmp_path, seed=0)
    (tmp_path / "d.json").write_text(f'[{good}, {{"text": "b", "label": "y", "label": "z"}}]')
    with pytest.raises(DataError, match=r"d\.json: an object repeats the key 'label'"):
        build_splits(config(tmp_path / "d.json"), tmp_path, seed=0)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8", "UTF8"])
def test_a_utf8_bom_is_not_part_of_the_first_column_name(
    tmp_path: Path, suffix: str, encoding: str
) -> None:
    records = [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(40)]
    if suffix == ".json":
        content = json.dumps(records)
    elif suffix == ".jsonl":
        content = "\n".join(json.dumps(r) for r in records)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        content = "\n".join(
            [f"text{sep}label", *(f"{r['text']}{sep}{r['label']}" for r in records)]
        )
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))
    splits, labels, _ = build_splits(config(path, encoding=encoding), tmp_path, seed=0)
    assert labels == ["a", "b"]
    texts = [t for split in splits.values() for t in split.texts]
    assert sorted(texts) == sorted(r["text"] for r in records)


def test_broken_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl: line 2: not valid JSON"):
        build_splits(config(path), tmp_path, seed=0)


def test_jsonl_texts_keep_unicode_line_breaks_and_lines_keep_their_numbers(tmp_path: Path) -> None:
    """#27.9: json.dumps(ensure_ascii=False) writes U+2028 and U+0085 raw; splitlines() cut
    such a row in two ("not valid JSON") and shifted every later line number."""
    texts = [f"row {i}\u2028next\x85end" for i in range(30)]
    rows = [
        json.dumps({"text": t, "label": "ab"[i % 2]}, ensure_ascii=False)
        for i, t in enumerate(texts)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    splits, labels, _ = build_splits(config(path), tmp_path, seed=0)
    assert labels == ["a", "b"]
    assert sorted(t for split in splits.values() for t in split.texts) == sorted(texts)
    path.write_text("\n".join(rows) + '\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl: line 31: not valid JSON"):
        build_splits(config(path), tmp_path, seed=0)


def test_json_jsonl_and_parquet_read_the_same_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"text": f"row {i}", "label": i % 3, "uid": f"u{i}"} for i in range(60)]
    (tmp_path / "d.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    results = []
    for name in ("d.json", "d.jsonl", "d.parquet"):
        splits, labels, _ = build_splits(config(tmp_path / name, id_column="uid"), tmp_path, seed=1)
        assert labels == ["0", "1", "2"]  # numeric labels sort numerically, kept as names
        results.append(splits["test"].ids)
    assert results[0] == results[1] == results[2]


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ["id,text,label", "1,a,x", "2,b,y", "1,c,x"])
    with pytest.raises(DataError, match="duplicate example id '1'"):
        build_splits(config(path, id_column="id"), tmp_path, seed=0)


def test_duplicates_dropped_before_splitting_and_subsample(tmp_path: Path) -> None:
    rows = (
        ["text,label"]
        + [f"text {i},{'a' if i % 2 else 'b'}" for i in range(100)]
        + ["TEXT 1,a", "text  2,b"]
    )
    path = write_csv(tmp_path / "d.csv", rows)
    splits, _, report = build_splits(config(path, max_examples=50), tmp_path, seed=0)
    assert report.duplicates_dropped == 2
    assert report.subsampled_from == 100
    assert sum(len(splits[name]) for name in ("train", "validation", "test")) == 50
    texts = [t.lower() for s in splits.values() for t in s.texts]
    assert len(texts) == len(set(texts)) == 100  # the 50 left out are kept as unlabelled text
    assert len(splits["unused"]) == 50 and set(splits["unused"].labels.tolist()) == {-1}


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match=r"data.path: 'missing.csv' does not exist"):
        build_splits(config("missing.csv"), tmp_path, seed=0)
    odd = tmp_path / "d.xlsx"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="set data.format"):
        build_splits(config(odd), tmp_path, seed=0)


def test_hub_dataset_offline_gives_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        DistillError, match=r"data.path: 'someone/no-such-dataset' is not a local file"
    ):
        build_splits(config("someone/no-such-dataset"), tmp_path, seed=0)


def test_package_path_resolves_shipped_files(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="package 'no-such-dist-xyz' is not installed"):
        build_splits(config("pkg:no-such-dist-xyz/a.csv"), tmp_path, seed=0)
    with pytest.raises(DistillError, match="does not exist inside package 'pytest'"):
        build_splits(config("pkg:pytest/pytest/nothing.csv"), tmp_path, seed=0)
    with pytest.raises(DistillError, match="may not leave the package"):
        build_splits(config("pkg:pytest/../../etc/passwd"), tmp_path, seed=0)


def test_huge_text_field_is_read_and_cut(tmp_path: Path) -> None:
    from distill.data.readers import MAX_TEXT_CHARS

    huge = "word " * 2_000_000  # 10 MB in one CSV field
    rows = ["text,label", f"{huge},a"] + [f"text {i},{'a' if i % 2 else 'b'}" for i in range(40)]
    path = write_csv(tmp_path / "big.csv", rows)
    splits, _, report = build_splits(config(path), tmp_path, seed=0)
    longest = max(len(t) for s in splits.values() for t in s.texts)
    assert longest == MAX_TEXT_CHARS
    assert report.texts_truncated == 1


def test_test_texts_are_never_trained_on(sentiment_csv: Path, tmp_path: Path) -> None:
    import csv as csv_module

    with sentiment_csv.open(encoding="utf-8") as handle:
        rows = list(csv_module.reader(handle))[1:]
    test_file = write_csv(
        tmp_path / "test.csv",
        ["text,label", f"{rows[0][0].upper()},{rows[0][1]}", "new text here,positive"],
    )
    splits, _, report = build_splits(
        config(sentiment_csv, test_path=str(test_file)), tmp_path, seed=0
    )
    assert report.train_overlap_dropped == 1
    train_texts = {t.lower() for t in splits["train"].texts + splits["validation"].texts}
    assert rows[0][0].lower() not in train_texts
    with pytest.raises(
        DataError,
        match=r"1 training text\(s\) also appear in validation/test \(reviews.csv:2 = test.csv:2\)",
    ):
        build_splits(
            config(sentiment_csv, test_path=str(test_file), deduplicate=False), tmp_path, seed=0
        )


def test_transfer_text_from_unused_rows_and_from_a_file(tmp_path: Path) -> None:
    from distill.config import TransferConfig
    from distill.tasks.classification.data import load_transfer
    from distill.tasks.classification.files import write_split

    rows = ["text,label"] + [f"text {i},{'a' if i % 2 else 'b'}" for i in range(100)]
    path = write_csv(tmp_path / "d.csv", rows)
    data = config(path, max_examples=40)
    splits, _, _ = build_splits(data, tmp_path, seed=0)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, split in splits.items():
        write_split(data_dir / f"{name}.jsonl", split)
    unused, counts = load_transfer(
        TransferConfig(path="unused", max_examples=25), data, tmp_path, data_dir, seed=0
    )
    assert counts == {"read": 60, "new_texts": 60, "used": 25}
    labelled = {t for n in ("train", "validation", "test") for t in splits[n].texts}
    assert not labelled & set(unused.texts) and set(unused.labels.tolist()) == {-1}
    # A separate file, with its own column; texts already labelled are skipped.
    write_csv(
        tmp_path / "raw.csv",
        ["body", splits["train"].texts[0], "fresh one", "fresh two", "fresh one"],
    )
    extra, counts = load_transfer(
        TransferConfig(path="raw.csv", text_column="body"), data, tmp_path, data_dir, seed=0
    )
    assert extra.texts == ["fresh one", "fresh two"] and extra.ids == [
        "transfer:raw.csv:3",
        "transfer:raw.csv:4",
    ]
    assert counts == {"read": 4, "new_texts": 2, "used": 2}
    with pytest.raises(DataError, match=r"no column 'text' \(student.transfer.text_column\)"):
        load_transfer(TransferConfig(path="raw.csv"), data, tmp_path, data_dir, seed=0)
    write_csv(tmp_path / "stale.csv", ["text", splits["test"].texts[0]])
    with pytest.raises(DataError, match="holds no text that is not already labelled"):
        load_transfer(TransferConfig(path="stale.csv"), data, tmp_path, data_dir, seed=0)
