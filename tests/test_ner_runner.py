"""Serving an NER bundle without torch: distill.tasks.token_classification.runner and
`distill predict` on a token-classification bundle.

One tiny random BERT token classifier (its classifier re-drawn so that every tag wins on
some tokens) is exported with torch's dynamo exporter and assembled into a bundle once (no
``aggregation`` in its manifest: the default, ``first``); tests that tamper with it work on a
copy. Its entities are compared with the transformers pipeline's on the PyTorch model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SPECIAL

from distill.cli import main
from distill.config import DataConfig
from distill.errors import ArtifactError, DataError
from distill.export.bundle import MANIFEST_FILE, write_bundle_manifest
from distill.export.onnx import export_onnx
from distill.tasks.token_classification.aggregation import (
    _group,
    _Tagged,
    aggregate,
    served_word_tags,
    word_spans,
    words_seen,
)
from distill.tasks.token_classification.data import TagReport, load_sentences
from distill.tasks.token_classification.runner import (
    Entity,
    EntityPrediction,
    _label_problems,
    load_bundle,
)

TAGS = {0: "O", 1: "B-person", 2: "I-person", 3: "B-geo-loc", 4: "I-geo-loc"}
LABELS = [TAGS[i] for i in range(len(TAGS))]
MAX_LENGTH = 48
WORDS = ["alice", "bob", "paris", "berlin", "new", "york", "visited", "and", "with", "in", "to"]
WORDS += ["went", "see", "now", "http", "https", "www", "com"]
CHARACTERS = list(string.ascii_lowercase + string.digits)
# Whole words, then single characters and ## pieces: every ASCII word tokenizes (most into
# several sub-tokens), an emoji is [UNK].
VOCAB = SPECIAL + WORDS + CHARACTERS + [f"##{c}" for c in CHARACTERS] + list(".,:/?!=-'\"")
TEXTS = [
    "Alice visited Paris and Berlin with Bob",
    "emoji 😀 alice 🎉 in paris!",
    "see https://www.example.com/path?q=1 now",
    "bob    went   to\tnew  york",
    "Café naïve Zoë à Montréal",
    "unbelievably xylophone quizzical jazz",
    "  leading and trailing spaces  ",
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded BertForTokenClassification + WordPiece BertTokenizerFast, saved."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-ner")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(TAGS),
        id2label=TAGS,
        label2id={name: i for i, name in TAGS.items()},
    )
    model = BertForTokenClassification(config).eval()
    with torch.no_grad():
        # Initialised weights give every token nearly equal tag logits (near-ties, all "O"
        # or all one tag); wide weights plus these biases give O on about 40% of tokens and
        # every other tag on some, with clear margins.
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.copy_(torch.tensor([1.0, 0.8, -1.0, 0.8, 0.5]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _write_manifest(bundle: Path, **extra: Any) -> None:
    """The manifest the NER export stage writes: every file with a role, the runner's keys."""
    roles = {
        p.relative_to(bundle).as_posix(): "model" if p.suffix == ".onnx" else "tokenizer"
        for p in bundle.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    }
    roles["config.json"] = "config"
    info = {
        "task": "token-classification",
        "labels": LABELS,
        "max_length": MAX_LENGTH,
        "model": "model.onnx",
        "input_names": ["input_ids", "attention_mask", "token_type_ids"],
        **extra,
    }
    write_bundle_manifest(bundle, roles, info)


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx (the token-classification export), config.json, tokenizer files."""
    folder = tmp_path_factory.mktemp("ner-bundle") / "bundle"
    export_onnx(model_dir, folder, model_class="AutoModelForTokenClassification")
    _write_manifest(folder)
    return folder


@pytest.fixture(scope="module")
def simple_bundle(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle with ``"aggregation": "simple"``, as exports before whole-word entities
    wrote it."""
    folder = tmp_path_factory.mktemp("ner-simple") / "bundle"
    shutil.copytree(bundle, folder)
    _write_manifest(folder, aggregation="simple")
    return folder


@pytest.fixture
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def _pipeline(model_dir: Path, strategy: str, max_length: int | None = None) -> Any:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if max_length is not None:  # the pipeline truncates to model_max_length
        tokenizer.model_max_length = max_length
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    return pipeline(
        "token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=strategy
    )


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_same_entities(ours: list[Entity], theirs: list[dict[str, Any]], text: str) -> None:
    """Types, spans and scores of our entities against the pipeline's (whose ``word`` is a
    decoding of lowercased tokens, so the words are compared as slices of the text)."""
    assert [(e.type, e.start, e.end) for e in ours] == [
        (t["entity_group"], t["start"], t["end"]) for t in theirs
    ], text
    for entity, expected in zip(ours, theirs, strict=True):
        assert entity.text == text[expected["start"] : expected["end"]]
        assert entity.score == pytest.approx(float(expected["score"]), abs=1e-4)


# --------------------------------------------------------------------------- results


# Texts whose whitespace-separated words are the tokenizer's words (no punctuation inside a
# word): there the transformers pipeline's word strategies group the same sub-tokens as ours.
PLAIN = [TEXTS[0], TEXTS[3], TEXTS[4], TEXTS[5], TEXTS[6]]


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_entities_equal_the_transformers_pipeline(
    model_dir: Path, bundle: Path, strategy: str
) -> None:
    predictor = load_bundle(bundle, threads=1, aggregation=strategy)
    assert predictor.aggregation == strategy and predictor.labels == LABELS
    reference = _pipeline(model_dir, strategy)
    texts = TEXTS if strategy == "simple" else PLAIN
    predictions = predictor.predict(texts, batch_size=3)  # padded batches of unequal texts
    assert [p.text for p in predictions] == texts
    for prediction in predictions:
        _assert_same_entities(prediction.entities, reference(prediction.text), prediction.text)
    entities = [e for p in predictions for e in p.entities]
    # the fixture model is meant to give non-trivial entities: both types, some spanning
    # several tokens and whitespace
    assert {e.type for e in entities} == {"person", "geo-loc"}
    assert any(" " in e.text for e in entities)
    if strategy == "simple":  # and some after an emoji
        assert any(e.start > TEXTS[1].index("😀") for e in predictions[1].entities)


def test_the_default_is_first_and_an_old_simple_bundle_still_serves_simple(
    bundle: Path, simple_bundle: Path
) -> None:
    assert load_bundle(bundle).aggregation == "first"
    old = load_bundle(simple_bundle)
    assert old.aggregation == "simple"
    assert old.predict(TEXTS) == load_bundle(bundle, aggregation="simple").predict(TEXTS)
    assert load_bundle(simple_bundle, aggregation="first").aggregation == "first"
    with pytest.raises(ValueError, match="aggregation must be one of first, average, max, simple"):
        load_bundle(bundle, aggregation="weighted")


def test_word_strategies_keep_whitespace_words_whole(bundle: Path) -> None:
    """Entities of the word strategies start and end on whitespace-word edges (a word with
    punctuation or an emoji inside is one word); "simple" ones split words."""
    split = 0
    for strategy in ("first", "average", "max"):
        predictor = load_bundle(bundle, aggregation=strategy)
        for text in TEXTS:
            spans = word_spans(text)
            starts, ends = {s for s, _ in spans}, {e for _, e in spans}
            for entity in predictor.predict([text])[0].entities:
                assert entity.start in starts and entity.end in ends, (strategy, entity)
    simple = load_bundle(bundle, aggregation="simple")
    for text in TEXTS:
        starts = {s for s, _ in word_spans(text)}
        split += sum(e.start not in starts for e in simple.predict([text])[0].entities)
    assert split > 0


@dataclass
class _Encoding:
    """What aggregation reads of a ``tokenizers.Encoding``."""

    offsets: list[tuple[int, int]]
    special_tokens_mask: list[int]
    attention_mask: list[int]


def _one_hot(tags: list[str], confidence: float = 0.9) -> np.ndarray:
    rows = np.full((len(tags), len(LABELS)), (1 - confidence) / (len(LABELS) - 1))
    for row, tag in zip(rows, tags, strict=True):
        row[LABELS.index(tag)] = confidence
    return rows


def test_a_word_of_sub_tokens_tagged_apart_is_one_entity_unless_simple() -> None:
    """`Gainesville` as Ga / ##ines / ##ville tagged geo-loc, person, person: one whole-word
    geo-loc under `first` (its first sub-token decides, as training labels it), fragments
    only under `simple`; `max` takes the most confident sub-token's tag for the whole word.
    A byte-level token whose offsets start on the space before its word belongs to that
    word."""
    text = "Gainesville @USAirways"
    offsets = [(0, 0), (0, 2), (2, 6), (6, 11), (11, 13), (13, 16), (16, 22), (0, 0), (0, 0)]
    encoding = _Encoding(offsets, [1, 0, 0, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 0])
    tags = ["O", "B-geo-loc", "B-person", "I-person", "B-person", "B-geo-loc", "O", "O", "O"]
    probabilities = _one_hot(tags)
    probabilities[5, LABELS.index("B-geo-loc")] = 0.95  # "USA": the most confident sub-token

    def found(strategy: str) -> list[tuple[str, str]]:
        entities = aggregate(text, encoding, probabilities, LABELS, strategy)
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text
        return [(e.type, e.text) for e in entities]

    assert found("first") == [("geo-loc", "Gainesville"), ("person", "@USAirways")]
    assert found("max") == [("geo-loc", "Gainesville"), ("geo-loc", "@USAirways")]
    assert found("simple") == [
        ("geo-loc", "Ga"),
        ("person", "inesville"),
        ("person", " @"),
        ("geo-loc", "USA"),
    ]


def test_served_entities_are_read_back_onto_the_words() -> None:
    words = ["flying", "to", "New", "York", "via", "O'Hare", "!"]
    text = " ".join(words)
    entities = [
        Entity("geo-loc", "New York", 10, 18, 0.9),
        Entity("facility", "Hare", text.index("Hare"), text.index("Hare") + 4, 0.8),
        Entity("person", "via O'Hare", text.index("via"), text.index("!") - 1, 0.7),
    ]
    assert served_word_tags(words, entities[:2]) == ["O", "O", "B-geo-loc", "I-geo-loc"] + ["O"] * 3
    # an entity that covers no word's first character tags no word
    assert served_word_tags(words, entities[2:]) == ["O"] * 4 + ["B-person", "I-person", "O"]
    assert words_seen(words, len(text)) == len(words)
    assert words_seen(words, text.index("York") + 1) == 4 and words_seen(words, 0) == 0


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_offsets_slice_the_original_text(bundle: Path, strategy: str) -> None:
    texts = [*TEXTS, "", "😀😀 🇫🇷 Zoë\u00a0Montréal", "a\tb\nc\r\nd  e"]
    for prediction in load_bundle(bundle, aggregation=strategy).predict(texts):
        ends = [0]
        for entity in prediction.entities:
            assert prediction.text[entity.start : entity.end] == entity.text
            assert entity.text and entity.text == entity.text.strip()
            assert entity.start >= ends[-1]  # in order, not overlapping
            ends.append(entity.end)
            assert 0 < entity.score <= 1


def test_long_texts_are_truncated_like_the_pipeline(model_dir: Path, bundle: Path) -> None:
    text = "alice visited paris " * 20
    predictor = load_bundle(bundle, aggregation="simple")
    (prediction,) = predictor.predict([text])
    encoding = predictor.tokenizer.encode(text)
    assert len(encoding.ids) == MAX_LENGTH
    kept = encoding.offsets[-2][1]  # the end of the last token before [SEP]
    assert kept < len(text) - 20 and prediction.seen == kept
    assert prediction.entities and max(e.end for e in prediction.entities) <= kept
    (whole,) = load_bundle(bundle).predict([text])
    assert whole.seen == kept and max(e.end for e in whole.entities) <= kept
    _assert_same_entities(
        prediction.entities, _pipeline(model_dir, "simple", MAX_LENGTH)(text), text
    )


def test_grouping_follows_the_tags() -> None:
    """B- starts an entity, I- of the same type continues it, O ends it, I- after O starts one."""
    tags = ["B-person", "I-person", "B-person", "O", "I-geo-loc", "I-geo-loc", "I-person", "O"]
    text = "abcdefgh"
    units = [_Tagged(tag, 0.5 + i / 20, i, i + 1, word=i) for i, tag in enumerate(tags)]
    assert [(e.type, e.text, e.start, e.end) for e in _group(units, text)] == [
        ("person", "ab", 0, 2),
        ("person", "c", 2, 3),
        ("geo-loc", "ef", 4, 6),
        ("person", "g", 6, 7),
    ]
    assert _group(units, text)[0].score == pytest.approx(0.525)


def test_to_dict_and_to_tsv() -> None:
    entities = [
        Entity("person", "Alice", 0, 5, 0.9),
        Entity("geo-loc", "New\tYork\\", 10, 19, 0.75),
    ]
    prediction = EntityPrediction("Alice in New\tYork\\", entities)
    assert prediction.to_dict() == {
        "text": "Alice in New\tYork\\",
        "entities": [
            {"type": "person", "text": "Alice", "start": 0, "end": 5, "score": 0.9},
            {"type": "geo-loc", "text": "New\tYork\\", "start": 10, "end": 19, "score": 0.75},
        ],
    }
    assert prediction.to_tsv() == "person:0-5:Alice\tgeo-loc:10-19:New\\tYork\\\\"
    assert EntityPrediction("nothing here", []).to_tsv() == ""


# Entity types and whether a bundle may serve them (no whitespace, no ':').
TYPES = {
    "geo-loc": True,
    "B-2_x": True,
    "Zoë/ü": True,
    "geo:loc": False,
    ":": False,
    "geo loc": False,
    "geo\tloc": False,
    "geo\u00a0loc": False,
    "geo\u2028loc": False,
    "geo\nloc": False,
}


@pytest.mark.parametrize("kind", list(TYPES))
def test_the_data_stage_reads_exactly_the_types_the_runner_serves(
    tmp_path: Path, kind: str
) -> None:
    """#27.1: one rule for both. A type the data stage reads must never make the published
    bundle unservable, and one the runner serves must not be refused as data."""
    labels = ["O", f"B-{kind}", f"I-{kind}"]
    served = not _label_problems(tmp_path / "manifest.json", labels)
    path = tmp_path / "ner.jsonl"
    row = {"tokens": ["New", "York"], "tags": labels[1:]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    data = DataConfig(path=str(path))
    try:
        (sentence,) = load_sentences(data.path, data, tmp_path, "data.path", TagReport())
    except DataError as exc:
        assert f"{path}: line 1, token 1: tag {labels[1]!r}: entity type {kind!r}" in str(exc)
        read = False
    else:
        assert sentence.tags == labels[1:]
        read = True
    assert served == read == TYPES[kind]
    # The runner's whole-name match: a trailing newline once slipped through its `$`.
    assert _label_problems(tmp_path / "m.json", ["O", f"B-{kind}\n"])


# --------------------------------------------------------------------------- command line


def test_predict_prints_entities_as_tsv_and_json(bundle: Path, capsys) -> None:
    texts = [*TEXTS[:2], "bob went", *TEXTS[2:4]]  # "bob went": no entity, an empty line
    expected = load_bundle(bundle, threads=1).predict(texts)
    assert not expected[2].entities
    code, out, err = _cli(["predict", str(bundle), *texts, "--threads", "1"], capsys)
    assert code == 0, err
    assert out.splitlines() == [p.to_tsv() for p in expected]
    assert out.splitlines()[2] == ""
    pattern = re.compile(r"^(person|geo-loc):(\d+)-(\d+):(.*)$")
    for line, text in zip(out.splitlines(), texts, strict=True):
        for field in line.split("\t") if line else []:
            _, start, end, words = pattern.match(field).groups()
            assert text[int(start) : int(end)].replace("\t", "\\t") == words
    code, out, err = _cli(["predict", str(bundle), "--json", *texts], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [p.to_dict() for p in expected]
    assert set(rows[0]) == {"text", "entities"}
    assert set(rows[0]["entities"][0]) == {"type", "text", "start", "end", "score"}


def test_predict_aggregation_option_overrides_the_manifest(bundle: Path, capsys) -> None:
    code, out, err = _cli(["predict", str(bundle), "--aggregation", "simple", *TEXTS], capsys)
    assert code == 0, err
    simple = load_bundle(bundle, aggregation="simple").predict(TEXTS)
    assert out.splitlines() == [p.to_tsv() for p in simple]
    code, out, err = _cli(["predict", str(bundle), *TEXTS], capsys)
    assert code == 0 and out.splitlines() != [p.to_tsv() for p in simple]  # whole words
    code, out, err = _cli(["predict", str(bundle), "--aggregation", "weighted", "alice"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "--aggregation must be one of first, average, max, simple, not 'weighted'" in err


def test_predict_loads_neither_torch_nor_transformers(bundle: Path) -> None:
    """A fresh interpreter: import the serving path, predict, and list what got imported."""
    code = (
        "import json, sys\n"
        "import distill.tasks.token_classification.runner, distill.cli\n"
        f"rc = distill.cli.main(['predict', {str(bundle)!r}, {TEXTS[0]!r}, '--json',"
        " '--threads', '1'])\n"
        "heavy = ('torch', 'transformers', 'optimum', 'datasets', 'accelerate', 'sklearn')\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in heavy if m in sys.modules]}),"
        " file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"rc": 0, "loaded": []}
    row = json.loads(result.stdout)
    assert row["text"] == TEXTS[0] and row["entities"]


def test_generate_refuses_an_ner_bundle_with_a_hint(bundle: Path, capsys) -> None:
    code, out, err = _cli(["generate", str(bundle), "some text"], capsys)
    assert code == 2 and out == ""
    assert "task is 'token-classification'" in err and "use `distill predict`" in err


# --------------------------------------------------------------------------- a bad bundle


def _edit_manifest(bundle: Path, edit: Any) -> None:
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def _not_iob2(m: dict) -> None:
    m["labels"] = ["O", "PER", "I-person", "B-geo-loc", "I-geo-loc"]


def _orphan_inside(m: dict) -> None:
    m["labels"] = ["O", "B-person", "I-person", "B-geo-loc", "I-place"]


def _swapped(m: dict) -> None:
    m["labels"] = ["O", "B-geo-loc", "I-geo-loc", "B-person", "I-person"]


def _no_outside(m: dict) -> None:
    m["labels"] = ["B-x", "B-person", "I-person", "B-geo-loc", "I-geo-loc"]


def _colon_type(m: dict) -> None:
    m["labels"] = ["O", "B-per:son", "I-per:son", "B-geo-loc", "I-geo-loc"]


def _max_length_text(m: dict) -> None:
    m["max_length"] = "48"


def _max_length_past_positions(m: dict) -> None:
    m["max_length"] = 1000  # the model has 64 positions: onnxruntime indexed past them


def _extra_tag(m: dict) -> None:
    m["labels"] = [*LABELS, "B-org"]


def _unknown_aggregation(m: dict) -> None:
    m["aggregation"] = "weighted"


def _unlist_config(m: dict) -> None:
    del m["files"]["config.json"]


def _other_inputs(m: dict) -> None:
    m["input_names"] = ["input_ids", "attention_mask"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_not_iob2, r"manifest\.json: 'labels' \['PER'\] are not IOB2 tags"),
        (_orphan_inside, r"manifest\.json: 'labels' \['I-place'\] have no B- tag"),
        (_swapped, r"manifest\.json: 'labels' .* do not match the model's id2label .*config\.json"),
        (_no_outside, r"manifest\.json: 'labels' has no 'O' tag"),
        (_colon_type, r"manifest\.json: 'labels' \['B-per:son', 'I-per:son'\] are not IOB2"),
        (_max_length_text, r"manifest\.json: 'max_length' must be a positive integer"),
        (
            _max_length_past_positions,
            r"manifest\.json: 'max_length' is 1000, but the model takes at most 64 tokens "
            r"\(max_position_embeddings = 64 in .*config\.json\)",
        ),
        (
            _extra_tag,
            r"manifest\.json: 'labels' \[.*'B-org'\] do not match the model's 5 labels "
            r"\(id2label \['O', 'B-person', .*\] in .*config\.json\)",
        ),
        (
            _unknown_aggregation,
            r"manifest\.json: 'aggregation' must be one of first, average, max, simple, not",
        ),
        (_unlist_config, r"manifest\.json: 'files' does not list config\.json"),
        (_other_inputs, r"manifest\.json: 'input_names' .* differ from the inputs of model\.onnx"),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] or None,
)
def test_an_edited_manifest_is_refused(bundle_copy: Path, capsys, edit: Any, expected: str) -> None:
    _edit_manifest(bundle_copy, edit)
    code, out, err = _cli(["predict", str(bundle_copy), "alice"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert re.search(expected, err), err
    assert str(bundle_copy / MANIFEST_FILE) in err
    with pytest.raises(ArtifactError, match=expected):
        load_bundle(bundle_copy)


def test_a_config_whose_tags_disagree_is_refused(bundle_copy: Path) -> None:
    """config.json edited and re-hashed (a consistent but wrong bundle): still refused."""
    path = bundle_copy / "config.json"
    config = json.loads(path.read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(len(TAGS))}
    path.write_text(json.dumps(config))
    _write_manifest(bundle_copy)
    with pytest.raises(ArtifactError, match=r"do not match the model's id2label.*config\.json"):
        load_bundle(bundle_copy)


# --------------------------------------------------------------------------- transformers


def test_the_bundle_graph_matches_the_pytorch_tagger(bundle: Path, model_dir: Path) -> None:
    """The served probabilities are the PyTorch tagger's (the model the bundle was made from)."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    assert {
        int(k): v for k, v in json.loads((bundle / "config.json").read_text())["id2label"].items()
    } == TAGS
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    with torch.inference_mode():
        logits = model(**tokenizer(TEXTS[:2], padding=True, return_tensors="pt")).logits
    predictor = load_bundle(bundle)
    ours = predictor._probabilities(predictor.tokenizer.encode_batch(TEXTS[:2]))
    np.testing.assert_allclose(ours, logits.softmax(-1).numpy(), rtol=0, atol=1e-5)
