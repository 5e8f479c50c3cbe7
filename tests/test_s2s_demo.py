"""The shipped seq2seq demo's pieces: the KJV -> WEB extraction script
(recipes/data/bible_pairs.py) on a hand-made SQLite db with bible.db's schema, and the
BERT2BERT warm start (distill/tasks/seq2seq/warm_start.py) on a tiny BERT built from a config."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    EncoderDecoderModel,
)

from distill.config import validate_recipe
from distill.errors import ModelLoadError, RecipeError
from distill.tasks.seq2seq.warm_start import warm_start
from distill.timing.latency import torch_threads
from tests.conftest import build_tiny_classifier, write_vocab
from tests.seq2seq_models import build_tiny_t5

SCRIPT = Path(__file__).resolve().parent.parent / "recipes" / "data" / "bible_pairs.py"

# (book number, short name, [(chapter, verse, KJV, WEB)]).
BOOKS = [
    (
        1,
        "Gen",
        [
            (1, 1, "In the beginning God created the heaven.", "In the beginning God created."),
            (1, 2, "And  the Spirit of God moved.", "God`s Spirit was hovering."),
            (1, 3, "Jesus wept.", "Jesus wept."),  # under 3 words on both sides
            (1, 4, "And the LORD spake unto Moses, saying,", "Yahweh spoke to Moses, saying,"),
            (2, 1, "He offered [even] an offering.", "He offered [even] an offering [made]."),
        ],
    ),
    (
        2,
        "Exod",
        [
            (1, 1, "And the LORD spake unto Moses, saying,", "Yahweh said to Moses,"),  # repeat
            (1, 2, "These are the names of the children.", "Now these are the names."),
            (1, 3, "Every man and his household came.", "Every man and his household came."),
        ],
    ),
    (3, "Lev", [(1, 1, "And he called unto Moses out of it.", "Yahweh called to Moses.")]),
    (4, "Num", [(1, 1, "And the LORD spake in the wilderness.", "Yahweh spoke in the desert.")]),
    (
        5,
        "Deut",
        [(1, 1, "These be the words which Moses spake.", "These are the words Moses spoke.")],
    ),
]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bible_pairs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bible = _load_script()


def _make_db(path: Path) -> Path:
    """bible.db's tables (bible, bibleRef) with the KJV ('k'), the WEB ('4') and a third
    translation the script must ignore."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER "
            "NOT NULL, cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL, "
            "PRIMARY KEY (bbName, bNumber, cNumber, vNumber))"
        )
        db.execute(
            "CREATE TABLE bibleRef (bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, bName "
            "TEXT NOT NULL, bsName TEXT NOT NULL, PRIMARY KEY (bbName, bNumber))"
        )
        row = 0
        for book, name, verses in BOOKS:
            for bible_name in ("k", "4", "2"):
                db.execute(
                    "INSERT INTO bibleRef VALUES (?, ?, ?, ?)", (bible_name, book, name, name)
                )
            for chapter, verse, kjv, web in verses:
                for bible_name, text in (("k", kjv), ("4", web), ("2", "Au commencement.")):
                    row += 1
                    db.execute(
                        "INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)",
                        (row, bible_name, book, chapter, verse, text),
                    )
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_db(tmp_path_factory.mktemp("bible") / "bible.db")


def test_clean_drops_brackets_and_backticks_and_spaces() -> None:
    assert (
        bible.clean(" He offered [even] an  offering\t[made]. ")
        == "He offered even an offering made."
    )
    assert bible.clean("God`s Spirit said, `Go.`") == "God's Spirit said, 'Go.'"


def test_read_verses_pairs_kjv_with_web_in_order_read_only(db: Path) -> None:
    before = db.read_bytes()
    verses = bible.read_verses(db)
    assert [v.ref for v in verses][:5] == ["Gen 1:1", "Gen 1:2", "Gen 1:3", "Gen 1:4", "Gen 2:1"]
    assert len(verses) == 11
    assert verses[1].source == "And the Spirit of God moved."
    assert verses[1].target == "God's Spirit was hovering."
    assert verses[4].target == "He offered even an offering made."
    assert all("Au commencement" not in v.target for v in verses)
    lower = bible.read_verses(db, lowercase=True)
    assert lower[0].source == "in the beginning god created the heaven."
    assert lower[1].target == "god's spirit was hovering."
    assert db.read_bytes() == before


def test_kept_drops_short_verses_and_repeated_sources(db: Path) -> None:
    verses, dropped = bible.kept(bible.read_verses(db), min_words=3)
    refs = [v.ref for v in verses]
    assert "Gen 1:3" not in refs  # "Jesus wept."
    assert "Gen 1:4" in refs and "Exod 1:1" not in refs  # the first of a repeated source stays
    assert dropped == {"short": 1, "long": 0, "duplicate_source": 1}
    assert len(verses) == 9


def test_kept_drops_pairs_over_max_tokens(db: Path) -> None:
    words = lambda texts: [len(t.split()) + 2 for t in texts]  # noqa: E731 (a [CLS] and [SEP])
    verses, dropped = bible.kept(bible.read_verses(db), 3, words, max_tokens=9)
    assert dropped == {"short": 1, "long": 1, "duplicate_source": 1}
    # Lev 1:1 (8 words) went; every other side fits in 7 words.
    assert "Lev 1:1" not in [v.ref for v in verses] and len(verses) == 8


def test_split_by_book_keeps_books_whole_and_is_seeded(db: Path) -> None:
    verses, _ = bible.kept(bible.read_verses(db), 3)
    parts = bible.split_by_book(verses, seed=13, validation_verses=1, test_verses=1)
    books = {name: {v.book for v in part} for name, part in parts.items()}
    assert all(books[name] for name in ("train", "validation", "test"))
    assert books["train"].isdisjoint(books["test"] | books["validation"])
    assert books["test"].isdisjoint(books["validation"])
    # Single-verse books fit a target of one verse; Gen (4 kept) and Exod (2) overshoot it.
    assert books["test"] | books["validation"] <= {3, 4, 5}
    assert {1, 2} <= books["train"]
    assert sum(len(p) for p in parts.values()) == len(verses)
    again = bible.split_by_book(verses, seed=13, validation_verses=1, test_verses=1)
    assert again == parts
    others = [bible.split_by_book(verses, s, 1, 1)["test"] for s in range(8)]
    assert len({tuple(v.ref for v in part) for part in others}) > 1


def test_split_by_book_refuses_an_empty_split(db: Path) -> None:
    verses, _ = bible.kept(bible.read_verses(db), 3)
    with pytest.raises(ValueError, match="validation"):
        bible.split_by_book(verses, seed=13, validation_verses=0, test_verses=1)


def test_main_writes_the_three_files(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pairs"
    argv = [str(out), "--db", str(db), "--validation-verses", "1", "--test-verses", "1"]
    assert bible.main(argv) == 0
    rows = {
        name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "validation", "test")
    }
    assert sum(map(len, rows.values())) == 9
    assert set(rows["train"][0]) == {"id", "source", "target"}
    assert rows["train"][0] == {
        "id": "Gen 1:1",
        "source": "In the beginning God created the heaven.",
        "target": "In the beginning God created.",
    }
    assert "9 pairs (1 short, 0 long and 1 repeated sources dropped)" in capsys.readouterr().out
    first = {name: (out / f"{name}.jsonl").read_bytes() for name in rows}
    bible.main(argv)
    assert first == {name: (out / f"{name}.jsonl").read_bytes() for name in rows}


# --- warm start ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT encoder (no head) and its WordPiece tokenizer, saved like a hub model."""
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder)), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def warm(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("warm") / "model"
    return warm_start(tiny_bert, out, AutoTokenizer.from_pretrained(tiny_bert))


def test_warm_start_copies_the_encoder_into_both_halves(tiny_bert: Path, warm: Path) -> None:
    model = AutoModelForSeq2SeqLM.from_pretrained(warm)
    assert isinstance(model, EncoderDecoderModel)
    bert = BertModel.from_pretrained(tiny_bert)
    query = bert.encoder.layer[1].attention.self.query.weight
    assert torch.equal(model.encoder.encoder.layer[1].attention.self.query.weight, query)
    decoder_layer = model.decoder.bert.encoder.layer[1]
    assert torch.equal(decoder_layer.attention.self.query.weight, query)
    assert hasattr(decoder_layer, "crossattention")
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    assert model.config.is_encoder_decoder


def test_warm_start_sets_special_ids_and_tokenizer(warm: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(warm)
    model = AutoModelForSeq2SeqLM.from_pretrained(warm)
    ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    assert ids == (2, 3, 0)  # conftest's vocabulary: [PAD] [UNK] [CLS] [SEP] ...
    for config in (model.config, model.generation_config):
        assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == ids
    assert model.config.vocab_size == tokenizer.vocab_size
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("[CLS]", "[SEP]")
    targets = tokenizer(text_target=["great movie"])["input_ids"][0]
    assert targets[0] == tokenizer.cls_token_id and targets[-1] == tokenizer.sep_token_id


def test_warm_started_model_trains_and_generates(warm: Path) -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(warm)
    model = AutoModelForSeq2SeqLM.from_pretrained(warm)
    batch = tokenizer(["great movie", "bad food"], padding=True, return_tensors="pt")
    labels = tokenizer(text_target=["bad food", "great movie"], padding=True, return_tensors="pt")
    labels = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    with torch_threads(1):  # tiny tensors: a second thread only waits on a busy machine
        for _ in range(30):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        model.eval()
        generated = model.generate(**batch, max_new_tokens=6, num_beams=1, do_sample=False)
    assert losses[-1] < losses[0] / 4
    assert generated[0, 0].item() == tokenizer.cls_token_id
    outputs = tokenizer.batch_decode(generated, skip_special_tokens=True)
    assert outputs == ["bad food", "great movie"]


def test_warm_start_refuses_an_encoder_decoder(tmp_path: Path) -> None:
    t5 = build_tiny_t5(tmp_path / "t5", ["a", "b"])
    with pytest.raises(ModelLoadError, match=r"teacher\.model: .*already an encoder-decoder"):
        warm_start(t5, tmp_path / "out", AutoTokenizer.from_pretrained(t5))
    assert not (tmp_path / "out").exists()


def test_warm_start_refuses_a_decoder_only_model(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(
        folder
    )
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_t5(tmp_path / "t5", ["a"]))
    with pytest.raises(
        ModelLoadError, match=r"teacher\.model: .*'gpt2' model, not an encoder-only"
    ):
        warm_start(folder, tmp_path / "out", tokenizer)


def test_warm_start_names_the_key_when_nothing_loads(tmp_path: Path, tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    with pytest.raises(ModelLoadError, match=r"teacher\.model: cannot read the config"):
        warm_start(tmp_path / "missing", tmp_path / "out", tokenizer)


def test_warm_start_accepts_a_classifier_checkpoint(tmp_path: Path) -> None:
    """A fine-tuned BERT classifier is an encoder too (its head is dropped)."""
    folder = build_tiny_classifier(tmp_path / "cls", layers=1)
    out = warm_start(folder, tmp_path / "out", AutoTokenizer.from_pretrained(folder))
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(out), EncoderDecoderModel)


def test_teacher_warm_start_is_a_seq2seq_recipe_key() -> None:
    base = {
        "name": "demo",
        "task": "seq2seq",
        "data": {"path": "pairs.jsonl"},
        "teacher": {"model": "bert", "warm_start": True},
        "student": {"init": "teacher-layers", "layers": [0]},
    }
    assert validate_recipe(base).teacher.warm_start is True
    assert validate_recipe({**base, "teacher": {"model": "m"}}).teacher.warm_start is False
    with pytest.raises(RecipeError, match=r"teacher\.warm_start"):
        validate_recipe({**base, "task": "sequence-classification"})


def test_the_teacher_stage_warm_starts_an_encoder_only_teacher(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from distill.config import DataConfig, TeacherConfig
    from distill.pipeline.artifacts import RunContext
    from distill.tasks.seq2seq.files import PairSplit, write_split
    from distill.tasks.seq2seq.stages import teacher as teacher_stage

    words = ["good", "great", "love", "happy", "bad", "awful", "hate", "sad"]
    partner = dict(zip(words, words[4:] + words[:4], strict=True))
    for name, n in (("train", 32), ("validation", 8), ("test", 8)):
        sources = [" ".join(words[(i + k) % 8] for k in range(1 + i % 3)) for i in range(n)]
        targets = [" ".join(partner[w] for w in s.split()) for s in sources]
        write_split(
            tmp_path / "data" / f"{name}.jsonl",
            PairSplit([f"{name}{i}" for i in range(n)], sources, targets),
        )
    config = TeacherConfig(
        model=str(tiny_bert), warm_start=True, max_steps=4, batch_size=8, learning_rate=1e-3
    )
    out = tmp_path / "teacher"
    out.mkdir()
    ctx = RunContext(name="t", seed=13, task="seq2seq", workdir=tmp_path, recipe_dir=tmp_path)
    data = DataConfig(path="pairs.jsonl", max_length=8, max_target_length=6)
    with torch_threads(1):
        metrics = teacher_stage.run(
            ctx, {"data": tmp_path / "data"}, out, data=data, teacher=config
        )
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "model")
    assert isinstance(model, EncoderDecoderModel)
    assert model.generation_config.decoder_start_token_id == 2  # [CLS]
    assert AutoTokenizer.from_pretrained(out / "model").eos_token == "[SEP]"
    assert metrics["steps"] == 4 and metrics["source"] == str(tiny_bert)
    assert not (out / "checkpoints").exists()
