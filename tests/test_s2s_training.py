"""Seq2seq training on tiny models: encoding and batches, the word-level KD loss against a
hand computation, sequence-level KD as cross-entropy on the teacher's outputs, the labels
stage's top-k caches, the three ways of building a student, and a teacher -> labels ->
student run on a word-for-word translation where every loss falls."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from seq2seq_models import build_tiny_bart, build_tiny_t5, build_tokenizer

from distill.config import DataConfig, StudentTable, TeacherConfig
from distill.errors import ArtifactError, DataError, ModelLoadError
from distill.pipeline.artifacts import RunContext
from distill.tasks.seq2seq.encoding import Seq2SeqCollator, encode_pairs
from distill.tasks.seq2seq.files import PairSplit, read_split, write_split
from distill.tasks.seq2seq.generation import generate_ids, generate_texts
from distill.tasks.seq2seq.losses import word_distillation_loss
from distill.tasks.seq2seq.models import (
    build_student,
    check_positions,
    freeze_seq2seq,
    load_seq2seq,
)
from distill.tasks.seq2seq.shrink import layer_counts
from distill.tasks.seq2seq.stages import labels as labels_stage
from distill.tasks.seq2seq.stages import student as student_stage
from distill.tasks.seq2seq.stages import teacher as teacher_stage
from distill.timing.latency import torch_threads
from distill.train.topk import IGNORE_INDEX

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "reverse:"]
PLAIN = WORDS[:-1]
EOS, PAD = 1, 0


# A word-for-word "translation": each word of the source becomes its partner, in order.
PARTNER = dict(zip(PLAIN, PLAIN[4:] + PLAIN[:4], strict=True))


def translation(n: int, seed: int, tag: str) -> PairSplit:
    """``n`` sources of 2 to 4 words, each target the source word for word translated."""
    rng = random.Random(seed)
    sources = [" ".join(rng.choice(PLAIN) for _ in range(rng.randint(2, 4))) for _ in range(n)]
    targets = [" ".join(PARTNER[word] for word in source.split()) for source in sources]
    return PairSplit([f"{tag}{i}" for i in range(n)], sources, targets)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models are all overhead: one thread is 10x faster than two contended ones."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer(WORDS)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("t5"), WORDS)


# --- encoding and batches ---------------------------------------------------------------


def test_pairs_are_prefixed_cut_and_keep_eos_last(tokenizer: Any) -> None:
    split = PairSplit(["a"], ["red cat dog sun moon"], ["tree sun moon red"])
    (example,) = encode_pairs(
        tokenizer, split, prefix="reverse: ", max_length=4, max_target_length=3
    )
    ids = tokenizer.convert_tokens_to_ids
    assert example["input_ids"] == [ids("reverse:"), ids("red"), ids("cat"), EOS]
    assert example["labels"] == [ids("tree"), ids("sun"), EOS]


def test_the_collator_pads_sources_labels_and_cached_top_k(tokenizer: Any) -> None:
    features = [
        {"input_ids": [5, 6, 1], "labels": [7, 1], "hard": True},
        {"input_ids": [5, 1], "labels": [8, 9, 10, 1], "hard": False},
    ]
    for feature in features:
        n = len(feature["labels"])
        feature["topk_values"] = np.full((n, 2), 3.0)
        feature["topk_indices"] = np.full((n, 2), 4)
        feature["topk_log_normalizer"] = np.full(n, 5.0)
    batch = Seq2SeqCollator(PAD)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [5, 1, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, IGNORE_INDEX, IGNORE_INDEX], [8, 9, 10, 1]]
    assert batch["topk_values"].shape == (2, 4, 2) and batch["topk_indices"].dtype == torch.long
    assert batch["topk_values"][0, :, 0].tolist() == [3.0, 3.0, 0.0, 0.0]
    assert batch["topk_log_normalizer"][1].tolist() == [5.0] * 4
    assert batch["hard"].tolist() == [True, False]


# --- losses ------------------------------------------------------------------------------

STUDENT = [[1.0, 0.5, -0.5, 0.0, 2.0], [0.2, -1.0, 1.5, 0.3, 0.0], [9.0] * 5]
TEACHER = [[2.0, 1.0, 0.0, -1.0, 0.5], [-0.5, 0.0, 3.0, 1.0, 0.2], [0.0] * 5]
LABELS = [0, 2, IGNORE_INDEX]  # the third position is padding: never scored


def _softmax(x: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in x]
    return [v / sum(e) for v in e]


def _hand_kd_and_ce(temperature: float, k: int) -> tuple[float, float]:
    """Per scored token: the teacher's top-k with their true probabilities at T plus a tail
    bucket, the student's softened distribution folded alike; KL x T^2 and CE averaged."""
    kls, ces = [], []
    for s, t, label in zip(STUDENT[:2], TEACHER[:2], LABELS[:2], strict=True):
        top = sorted(range(5), key=lambda i: -t[i])[:k]
        log_z = math.log(sum(math.exp(v / temperature) for v in t))
        p = [math.exp(t[i] / temperature - log_z) for i in top]
        q_all = _softmax(s, temperature)
        q = [q_all[i] for i in top]
        p.append(1 - sum(p))
        q.append(1 - sum(q))
        kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))
        ces.append(-math.log(_softmax(s)[label]))
    return sum(kls) / 2 * temperature**2, sum(ces) / 2


def _cached_teacher(temperature: float, k: int) -> tuple[torch.Tensor, ...]:
    logits = torch.tensor([TEACHER])
    values, indices = torch.topk(logits, k, dim=-1)
    return values, indices, torch.logsumexp(logits / temperature, dim=-1)


def test_word_kd_loss_matches_a_hand_computation_on_two_tokens_of_five_words() -> None:
    kd, ce = _hand_kd_and_ce(2.0, 2)
    assert (kd, ce) == pytest.approx((0.2788997, 1.1115837), rel=1e-6)
    loss, parts = word_distillation_loss(
        torch.tensor([STUDENT]), torch.tensor([LABELS]), _cached_teacher(2.0, 2), 2.0, 0.25
    )
    assert parts["kd"] == pytest.approx(kd, rel=1e-5)
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert loss.item() == pytest.approx(0.25 * kd + 0.75 * ce, rel=1e-5) == 0.9034127


def test_examples_not_hard_are_taught_by_the_kd_term_alone() -> None:
    student = torch.tensor([STUDENT, STUDENT], requires_grad=True)
    labels = torch.tensor([LABELS, LABELS])
    teacher = tuple(torch.cat([part, part]) for part in _cached_teacher(2.0, 2))
    hard = torch.tensor([True, False])
    _, parts = word_distillation_loss(student, labels, teacher, 2.0, 0.5, hard)
    kd, ce = _hand_kd_and_ce(2.0, 2)
    assert (parts["kd"], parts["ce"]) == pytest.approx((kd, ce), rel=1e-5)
    none = torch.tensor([False, False])
    _, none_hard = word_distillation_loss(student, labels, teacher, 2.0, 0.5, none)
    assert none_hard["ce"] == 0.0 and none_hard["kd"] == pytest.approx(kd, rel=1e-5)


def test_sequence_level_kd_is_cross_entropy_on_the_teachers_outputs() -> None:
    """alpha = 0: the plain token cross-entropy (no teacher needed), padding excluded."""
    loss, parts = word_distillation_loss(
        torch.tensor([STUDENT]), torch.tensor([LABELS]), None, 2.0, 0.0
    )
    assert loss.item() == pytest.approx(_hand_kd_and_ce(2.0, 2)[1], rel=1e-6)
    assert set(parts) == {"ce"}
    with pytest.raises(ValueError, match="needs the teacher's top-k"):
        word_distillation_loss(torch.tensor([STUDENT]), torch.tensor([LABELS]), None, 2.0, 0.5)


# --- models ------------------------------------------------------------------------------


def test_a_model_that_is_not_an_encoder_decoder_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=20,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(
        ModelLoadError, match="teacher.model: .* 'bert' model, not an encoder-decoder"
    ):
        load_seq2seq(tmp_path, "teacher.model")


def test_lengths_beyond_learned_positions_are_refused(tmp_path: Path) -> None:
    bart = load_seq2seq(build_tiny_bart(tmp_path / "bart", WORDS), "teacher.model")
    check_positions(bart.config, DataConfig(path="x", max_length=128, max_target_length=128))
    with pytest.raises(DataError, match=r"data.max_length = 200: .* 128 tokens"):
        check_positions(bart.config, DataConfig(path="x", max_length=200))
    with pytest.raises(DataError, match=r"data.max_target_length = 300"):
        check_positions(bart.config, DataConfig(path="x", max_target_length=300))
    # T5's positions are relative: no limit.
    t5 = load_seq2seq(build_tiny_t5(tmp_path / "t5", WORDS), "teacher.model")
    check_positions(t5.config, DataConfig(path="x", max_length=4096, max_target_length=4096))
    with pytest.raises(ModelLoadError, match="teacher.freeze_layers = 3: .* 2 layers"):
        freeze_seq2seq(t5, False, 3)
    counts = freeze_seq2seq(t5, True, 1)
    assert 0 < counts["trainable"] < counts["total"]


def test_students_from_the_teachers_layers_a_config_or_a_pretrained_model(
    t5_dir: Path, tmp_path: Path
) -> None:
    cut, built = build_student(t5_dir, StudentTable(num_layers=1, encoder_layers=[1]), 0)
    assert layer_counts(cut.config) == (1, 1)
    assert built == {"init": "teacher-layers", "decoder_layers": [0], "encoder_layers": [1]}
    config = StudentTable(init="config", num_layers=1, config={"d_ff": 16})
    first, built = build_student(t5_dir, config, 5)
    again, _ = build_student(t5_dir, config, 5)
    assert built["overrides"] == {"d_ff": 16, "num_decoder_layers": 1}
    assert layer_counts(first.config) == (2, 1) and first.config.d_ff == 16
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)
    )
    same_vocab = build_tiny_t5(tmp_path / "small", WORDS, layers=1, seed=3)
    model, built = build_student(
        t5_dir, StudentTable(init="pretrained", model=str(same_vocab)), 0, tmp_path
    )
    assert built["init"] == "pretrained" and layer_counts(model.config) == (1, 1)
    other = build_tiny_t5(tmp_path / "other", [*WORDS, "extra"], layers=1)
    with pytest.raises(ModelLoadError, match="student.model .*other.*: its vocabulary"):
        build_student(t5_dir, StudentTable(init="pretrained", model=str(other)), 0, tmp_path)


def test_generation_returns_outputs_in_input_order_whatever_the_batching(t5_dir: Path) -> None:
    model = load_seq2seq(t5_dir, "teacher model")
    tokenizer = build_tokenizer(WORDS)
    sources = translation(7, 9, "g").sources
    settings = dict(prefix="", max_length=8, max_new_tokens=5, num_beams=2)
    batched = generate_ids(model, tokenizer, sources, batch_size=3, **settings)
    alone = [generate_ids(model, tokenizer, [s], batch_size=1, **settings)[0] for s in sources]
    # An untrained model: outputs differ by source (so the order shows), at most 5 tokens.
    assert batched == alone and len({tuple(ids) for ids in batched}) > 1
    assert all(len(ids) <= 5 and 0 not in ids for ids in batched)
    texts = generate_texts(model, tokenizer, sources[:2], batch_size=2, **settings)
    assert texts == [t.strip() for t in tokenizer.batch_decode(alone[:2], skip_special_tokens=True)]


# --- teacher -> labels -> student ---------------------------------------------------------

DATA = DataConfig(path="pairs.jsonl", max_length=8, max_target_length=6)
FAST = dict(batch_size=16, learning_rate=1e-2)


def _write_data(root: Path) -> dict[str, Path]:
    """The data stage's split files (160 train, 20 validation, 20 test, 40 unused pairs) and
    the inputs of the later stages."""
    for name, n, seed in (
        ("train", 160, 1),
        ("validation", 20, 2),
        ("test", 20, 3),
        ("unused", 40, 4),
    ):
        write_split(root / "data" / f"{name}.jsonl", translation(n, seed, name[:2]))
    return {name: root / name for name in ("data", "teacher", "labels")}


def _context(root: Path) -> RunContext:
    return RunContext(name="t", seed=13, task="seq2seq", workdir=root, recipe_dir=root)


LABELLING_KEYS = dict(num_layers=1, kd_top_k=4, sequence_beams=2, transfer={"path": "unused"})
LABELLING = StudentTable(**LABELLING_KEYS)


def _new_transfer_sources() -> int:
    """The unused sources the labels stage keeps: each once, none in a labelled split."""
    labelled = {
        s for n, seed in ((160, 1), (20, 2), (20, 3)) for s in translation(n, seed, "").sources
    }
    return len(set(translation(40, 4, "").sources) - labelled)


TRANSFER = _new_transfer_sources()


@pytest.fixture(scope="module")
def t5_labels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The labels stage on a tiny (untrained) T5 teacher: word-level KD, unused transfer."""
    root = tmp_path_factory.mktemp("s2s-labels")
    inputs = _write_data(root)
    build_tiny_t5(root / "teacher" / "model", WORDS)
    (root / "labels").mkdir()
    metrics = labels_stage.run(
        _context(root), inputs, root / "labels", data=DATA, **labels_stage.labelling_of(LABELLING)
    )
    return {"root": root, "metrics": metrics}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three stages on 160 translated pairs (+ 40 unused sources as transfer text): a
    2-layer BART teacher (learned positions: it learns the word-for-word alignment that a
    tiny T5 does not in this budget), 200 steps; a student with one decoder layer, 80 steps
    for each of the distilled (word-level KD), no-KD and sequence-level students."""
    root = tmp_path_factory.mktemp("s2s-run")
    inputs = _write_data(root)
    bart = build_tiny_bart(root / "bart", WORDS)
    teacher = TeacherConfig(model=str(bart), max_steps=200, eval_steps=200, **FAST)
    student = StudentTable(**LABELLING_KEYS, max_steps=80, eval_steps=80, **FAST)
    metrics = {}
    for name, stage, table in (
        ("teacher", teacher_stage, {"teacher": teacher}),
        ("labels", labels_stage, labels_stage.labelling_of(student)),
        ("student", student_stage, {"student": student}),
    ):
        (root / name).mkdir()
        metrics[name] = stage.run(_context(root), inputs, root / name, data=DATA, **table)
    return {"root": root, "metrics": metrics, "student": student}


def test_the_labels_stage_caches_top_k_per_target_token_under_teacher_forcing(
    t5_labels: dict[str, Any],
) -> None:
    root = t5_labels["root"]
    tokenizer = build_tokenizer(WORDS)
    train = read_split(root / "data", "train")
    examples = encode_pairs(tokenizer, train, prefix="", max_length=8, max_target_length=6)
    with np.load(root / "labels" / "topk" / "train.npz") as cache:
        assert [str(i) for i in cache["ids"]] == train.ids
        assert np.diff(cache["offsets"]).tolist() == [len(e["labels"]) for e in examples]
        tokens = sum(len(e["labels"]) for e in examples)
        assert cache["values"].shape == cache["indices"].shape == (tokens, 4)
        assert (cache["values"].dtype, cache["indices"].dtype) == (np.float16, np.int32)
        assert cache["log_normalizer"].shape == (tokens,)
        assert cache["log_normalizer"].dtype == np.float32
        first = slice(0, len(examples[0]["labels"]))
        values, indices = cache["values"][first], cache["indices"][first]
        normalizer = cache["log_normalizer"][first]
    teacher = load_seq2seq(root / "teacher" / "model", "teacher model").eval()
    batch = Seq2SeqCollator(PAD)(examples[:1])
    with torch.no_grad():
        logits = teacher(**batch).logits[0].float()
    expected = torch.topk(logits, 4, dim=-1)
    assert indices.tolist() == expected.indices.tolist()
    assert values.astype(np.float32) == pytest.approx(expected.values.numpy(), abs=2e-2)
    temperature = LABELLING.temperature
    log_z = torch.logsumexp(logits / temperature, dim=-1).numpy()
    assert normalizer == pytest.approx(log_z, rel=1e-5)
    labels = t5_labels["metrics"]
    assert labels["transfer"] == {"read": 40, "used": TRANSFER} and 0 < TRANSFER < 40
    assert (
        labels["topk_transfer"]["examples"] == TRANSFER and labels["topk_train"]["tokens"] == tokens
    )
    # The transfer sources' targets are the teacher's beam outputs (also for the twin).
    outputs = read_split(root / "labels" / "sequence", "transfer")
    assert len(outputs) == TRANSFER and set(outputs.ids) <= {f"un{i}" for i in range(40)}
    path, n = root / "labels" / "topk" / "train.npz", len(examples[0]["labels"])
    with pytest.raises(ArtifactError, match=f"cached for {n} target tokens, not {n + 1}"):
        labels_stage.load_top_k(path, train.ids[:1], [n + 1])
    with pytest.raises(ArtifactError, match="no top-k for 1 example"):
        labels_stage.load_top_k(path, ["nope"], [n])


def test_every_loss_falls_from_teacher_to_students(pipeline: dict[str, Any]) -> None:
    metrics, root = pipeline["metrics"], pipeline["root"]
    teacher = metrics["teacher"]
    losses = [h["loss"] for h in _history(root / "teacher")]
    assert losses[-1] < losses[0] / 10
    assert teacher["validation"]["loss"] < 0.1 and teacher["test"]["bleu_greedy"] > 90
    student = metrics["student"]
    before = student["before_training"]["validation"]["loss"]
    for name, folder, result in (
        ("distilled", ".", student),
        ("baseline", "baseline", student["baseline"]),
        ("sequence", "sequence", student["sequence"]),
    ):
        assert result["validation"]["loss"] < before / 10, name
        assert result["steps"] == 80
        trained = [h["loss"] for h in _history(root / "student" / folder)]
        assert trained[-1] < trained[0] / 5, name
    # At this seed the soft targets help: the distilled student fits the gold validation
    # targets better than its no-KD and sequence-level twins (same start, same budget).
    assert student["validation"]["loss"] < student["baseline"]["validation"]["loss"]
    assert student["validation"]["loss"] < student["sequence"]["validation"]["loss"]
    assert student["built"]["decoder_layers"] == [0]
    assert student["training_examples"] == 160 + TRANSFER  # gold pairs + transfer (KD only)
    assert student["baseline"]["training_examples"] == 160
    assert student["sequence"]["training_examples"] == 160 + TRANSFER
    for folder in ("model", "baseline/model", "sequence/model"):
        assert (root / "student" / folder / "model.safetensors").is_file()


def test_the_sequence_twin_learns_the_teachers_outputs_as_targets(
    pipeline: dict[str, Any],
) -> None:
    root = pipeline["root"]
    tokenizer = build_tokenizer(WORDS)
    inputs = {name: root / name for name in ("data", "teacher", "labels")}
    pairs = student_stage.Pairs(inputs, DATA, tokenizer)
    (train, transfer) = student_stage.training_parts(pairs, "sequence", "word", True)
    outputs = read_split(root / "labels" / "sequence", "train")
    expected = encode_pairs(tokenizer, outputs, prefix="", max_length=8, max_target_length=6)
    assert list(train["labels"]) == [e["labels"] for e in expected]
    assert "topk_values" not in train.column_names and len(transfer) == TRANSFER
    (gold, kd_only) = student_stage.training_parts(pairs, "distilled", "word", True)
    assert set(gold["hard"]) == {True} and set(kd_only["hard"]) == {False}
    assert len(kd_only["topk_values"][0]) == len(kd_only["labels"][0])


def _history(folder: Path) -> list[dict[str, Any]]:
    import json

    history = json.loads((folder / "log_history.json").read_text(encoding="utf-8"))
    return [h for h in history if "loss" in h]


@pytest.mark.parametrize("distillation", ["sequence", "word+sequence"])
def test_sequence_modes_learn_the_teachers_outputs(
    distillation: str, t5_labels: dict[str, Any], tmp_path: Path
) -> None:
    """'sequence': the teacher's outputs only, no top-k cached; 'word+sequence': the top-k
    under teacher forcing on the teacher's outputs, which are also cross-entropy targets."""
    inputs = {
        "data": t5_labels["root"] / "data",
        "teacher": t5_labels["root"] / "teacher",
        "labels": tmp_path,
    }
    student = StudentTable(num_layers=1, distillation=distillation, kd_top_k=3, sequence_beams=1)
    metrics = labels_stage.run(
        _context(tmp_path), inputs, tmp_path, data=DATA, **labels_stage.labelling_of(student)
    )
    outputs = read_split(tmp_path / "sequence", "train")
    assert len(outputs) == 160 and metrics["sequence_train"] == {"examples": 160}
    assert not (tmp_path / "sequence" / "transfer.jsonl").exists()
    tokenizer = build_tokenizer(WORDS)
    pairs = student_stage.Pairs(inputs, DATA, tokenizer)
    (part,) = student_stage.training_parts(pairs, "distilled", distillation, False)
    expected = encode_pairs(tokenizer, outputs, prefix="", max_length=8, max_target_length=6)
    assert list(part["labels"]) == [e["labels"] for e in expected]
    if distillation == "sequence":
        assert not (tmp_path / "topk").exists() and "topk_train" not in metrics
        assert part.column_names == ["input_ids", "labels"]
    else:
        assert metrics["topk_train"]["tokens"] == sum(len(e["labels"]) for e in expected)
        assert set(part["hard"]) == {True} and len(part["topk_indices"][0][0]) == 3


def test_transfer_files_read_nested_columns_skip_labelled_sources_and_name_bad_rows(
    tmp_path: Path,
) -> None:
    from distill.config import TransferConfig

    data_dir = tmp_path / "data"
    for name, sources in (("train", ["red cat"]), ("validation", ["dog"]), ("test", ["Sun  Moon"])):
        write_split(data_dir / f"{name}.jsonl", PairSplit(sources, sources, sources))
    records = [
        {"translation": {"en": "sun moon"}},  # a test source, other spacing and case
        {"translation": {"en": "tree king"}},
        {"translation": {"en": "tree  King"}},  # the same source again
    ]
    path = tmp_path / "more.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    data = DataConfig(path="pairs.jsonl", source_column="translation.en")
    transfer = TransferConfig(path=str(path))
    split, counts = labels_stage.transfer_sources(transfer, data, _context(tmp_path), data_dir)
    assert split.sources == ["tree king"] and counts == {"read": 3, "used": 1}
    path.write_text(json.dumps({"translation": {"en": 7}}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"more.jsonl: line 1: column 'translation.en'"):
        labels_stage.transfer_sources(transfer, data, _context(tmp_path), data_dir)


def test_a_tokenizer_without_a_fast_version_is_refused_before_training() -> None:
    from distill.tasks.seq2seq.models import require_fast_tokenizer

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ModelLoadError, match=r"teacher.model: 'opus-mt' has a SlowTokenizer"):
        require_fast_tokenizer(SlowTokenizer(), "teacher.model", "opus-mt")
    require_fast_tokenizer(build_tokenizer(WORDS), "teacher.model", "t")
