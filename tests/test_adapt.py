"""Domain adaptation (stage `adapt`): the text it reads, BERT's masking statistics, the
masked-LM head and its loss, and the recipe's [adapt] table; the pipeline runs are in
tests/test_adapt_pipeline.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import synthetic_rows, write_csv

from distill.adapt.masked_lm import (
    IGNORED,
    MaskingCollator,
    load_masked_lm,
    mask_once,
    masked_lm_loss,
    prediction_head,
)
from distill.adapt.stage import encode
from distill.adapt.text import OwnText, domain_text
from distill.config import AdaptConfig, DataConfig, validate_recipe
from distill.errors import DataError, DistillError, ModelLoadError, RecipeError

MINIMAL = {
    "name": "t",
    "data": {"path": "x.csv"},
    "teacher": {"model": "some/model"},
    "student": {"num_layers": 2},
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _own(**overrides: list[str] | None) -> OwnText:
    fields = {
        "train": ["good flight", "bad food", "good flight"],
        "transfer": ["great movie"],
        "unused": ["sad service", "happy today"],
        "evaluation": ["awful movie"],
    }
    return OwnText(**{**fields, **overrides})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the text


def test_task_text_is_training_and_transfer_text_once_each(tmp_path: Path) -> None:
    text = domain_text(
        AdaptConfig(held_out_fraction=0.3), DataConfig(path="x"), tmp_path, _own(), 1
    )
    assert sorted(text.train + text.held_out) == ["bad food", "good flight", "great movie"]
    assert len(text.held_out) == 1  # round(3 * 0.3)
    assert text.record["source"] == "task text"
    assert text.record["dropped_duplicates"] == 1
    assert text.record["texts"] == 2 and text.record["held_out"] == 1


def test_a_table_loses_blanks_repeats_and_every_evaluation_text(tmp_path: Path) -> None:
    rows = [["Awful movie"], [""], ["good news"], ["good news"], ["new tweet"], ["other one"]]
    write_csv(tmp_path / "tweets.csv", ["body"], rows)
    adapt = AdaptConfig(path="tweets.csv", text_column="body", held_out_fraction=0.3)
    text = domain_text(adapt, DataConfig(path="x"), tmp_path, _own(), 3)
    assert sorted(text.train + text.held_out) == ["good news", "new tweet", "other one"]
    assert text.record["dropped_evaluation"] == 1  # "Awful movie" is a test text (any case)
    assert text.record["dropped_blank"] == 1 and text.record["dropped_duplicates"] == 1
    assert text.record["source"] == "adapt.path" and text.record["path"] == "tweets.csv"


def test_max_examples_is_a_seeded_sample(tmp_path: Path) -> None:
    many = [f"tweet number {i}" for i in range(50)]
    adapt = AdaptConfig(path="unused", max_examples=10)
    first = domain_text(adapt, DataConfig(path="x"), tmp_path, _own(unused=many), 5)
    again = domain_text(adapt, DataConfig(path="x"), tmp_path, _own(unused=many), 5)
    other = domain_text(adapt, DataConfig(path="x"), tmp_path, _own(unused=many), 6)
    assert len(first.train) + len(first.held_out) == 10
    assert first == again and first.train != other.train
    assert set(first.train) <= set(many)


def test_text_errors_name_the_key(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", ["text"], [["only one"]])
    data = DataConfig(path="x")
    with pytest.raises(DataError, match=r"no column 'body' \(adapt.text_column\)"):
        domain_text(AdaptConfig(path="t.csv", text_column="body"), data, tmp_path, _own(), 1)
    with pytest.raises(DataError, match="adapt.path = 't.csv': 1 usable text"):
        domain_text(AdaptConfig(path="t.csv"), data, tmp_path, _own(), 1)
    with pytest.raises(DataError, match="adapt.path = 'unused': no rows were left out"):
        domain_text(AdaptConfig(path="unused"), data, tmp_path, _own(unused=[]), 1)
    with pytest.raises(DistillError, match="adapt.path: 'missing.csv' does not exist"):
        domain_text(AdaptConfig(path="missing.csv"), data, tmp_path, _own(), 1)


# ----------------------------------------------------------------------------- masking


def test_masking_statistics_on_a_seeded_batch(tokenizer) -> None:
    rows = synthetic_rows(400, seed=2)
    examples = encode(tokenizer, [text for text, _ in rows], 32, offsets=False)
    batch = MaskingCollator(tokenizer, 0.15, whole_word_mask=False, seed=7)(examples)
    original = tokenizer.pad(
        [{"input_ids": e["input_ids"]} for e in examples], return_tensors="pt"
    )["input_ids"]
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    chosen = batch["labels"] != IGNORED
    assert not (chosen & special).any()  # [CLS], [SEP] and padding are never masked
    assert torch.equal(batch["labels"][chosen], original[chosen])
    share = chosen.sum().item() / (~special).sum().item()
    assert 0.13 < share < 0.17, share
    masked = batch["input_ids"][chosen]
    as_mask = (masked == tokenizer.mask_token_id).float().mean().item()
    kept = (masked == original[chosen]).float().mean().item()
    assert 0.75 < as_mask < 0.85 and 0.06 < kept < 0.14, (as_mask, kept)
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    again = MaskingCollator(tokenizer, 0.15, whole_word_mask=False, seed=7)(examples)
    assert torch.equal(again["input_ids"], batch["input_ids"])  # seeded: the same masks


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer) -> None:
    texts = [f"good {1000 + i * 37} flight {20 + i} bad" for i in range(300)]
    examples = encode(tokenizer, texts, 32, offsets=True)
    batch = MaskingCollator(tokenizer, 0.15, whole_word_mask=True, seed=3)(examples)
    chosen = batch["labels"] != IGNORED
    split_words = 0
    for row, text in enumerate(texts):
        words = encode(tokenizer, [text], 32, offsets=False)[0]
        pieces = tokenizer.convert_ids_to_tokens(words["input_ids"])
        starts = [i for i, piece in enumerate(pieces) if not piece.startswith("##")]
        for begin, end in zip(starts, [*starts[1:], len(pieces)], strict=True):
            marks = chosen[row, begin:end].tolist()
            split_words += end - begin > 1
            assert all(marks) or not any(marks), (text, pieces[begin:end], marks)
    assert split_words > 300  # the numbers are split into pieces: the test has teeth
    assert 0.08 < chosen.float().sum().item() / batch["attention_mask"].sum().item() < 0.2


def test_held_out_masks_are_drawn_once(tokenizer) -> None:
    examples = encode(tokenizer, ["good flight today", "bad food was poor"] * 20, 16, False)
    masked = mask_once(examples, MaskingCollator(tokenizer, 0.15, False, seed=1))
    assert [len(row["labels"]) for row in masked] == [len(e["input_ids"]) for e in examples]
    padded = MaskingCollator(tokenizer, 0.15, False)(masked[:4])
    for i in range(4):  # the collator only pads a masked example
        length = len(masked[i]["input_ids"])
        assert padded["input_ids"][i, :length].tolist() == masked[i]["input_ids"]
        assert padded["labels"][i, :length].tolist() == masked[i]["labels"]
        assert (padded["labels"][i, length:] == IGNORED).all()


# ----------------------------------------------------------------------------- the head


def _bert_without_head(folder: Path, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tiny_model_dir)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_a_new_head_is_tied_to_the_input_embeddings(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import BertForMaskedLM

    source = _bert_without_head(tmp_path / "encoder", tiny_model_dir)
    model, new_head = load_masked_lm(str(source), "teacher.model", None, False)
    assert new_head
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with torch.no_grad():  # tied: one matrix, seen from both ends
        model.get_input_embeddings().weight[5, 0] = 7.0
    assert model.get_output_embeddings().weight[5, 0].item() == 7.0

    with_head = tmp_path / "mlm"
    torch.manual_seed(1)
    BertForMaskedLM(model.config).save_pretrained(with_head)
    _, new_head = load_masked_lm(str(with_head), "teacher.model", None, False)
    assert not new_head


def test_a_decoder_only_teacher_has_no_masked_lm_form(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ModelLoadError, match="teacher.model: .* has no masked-LM form"):
        load_masked_lm(str(tmp_path), "teacher.model", None, False)


def test_the_loss_on_masked_tokens_equals_the_models_own(
    tmp_path: Path, tiny_model_dir: Path, tokenizer
) -> None:
    source = _bert_without_head(tmp_path / "encoder", tiny_model_dir)
    model, _ = load_masked_lm(str(source), "teacher.model", None, False)
    model.eval()
    examples = encode(tokenizer, [t for t, _ in synthetic_rows(24)], 16, offsets=False)
    batch = MaskingCollator(tokenizer, 0.15, False, seed=4)(examples)
    labels = batch.pop("labels")
    assert prediction_head(model) is model.cls
    ours = masked_lm_loss(model, dict(batch), labels)
    theirs = model(**batch, labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    nothing = torch.full_like(labels, IGNORED)
    model.base_model.requires_grad_(False)  # the head-only passes: only the head trains
    empty = masked_lm_loss(model, dict(batch), nothing)
    assert empty.item() == 0.0
    empty.backward()  # a batch with nothing masked still has a graph to the head
    assert model.cls.predictions.transform.dense.weight.grad is not None


# ----------------------------------------------------------------------------- the recipe


def test_adapt_defaults_and_unknown_keys() -> None:
    recipe = validate_recipe({**MINIMAL, "adapt": {}})
    assert recipe.adapt.path is None and recipe.adapt.mlm_probability == 0.15
    assert recipe.adapt.baseline == "teacher" and recipe.adapt.epochs == 1.0
    assert validate_recipe(MINIMAL).adapt is None
    with pytest.raises(RecipeError) as raised:
        validate_recipe({**MINIMAL, "adapt": {"epoch": 2, "mlm_probability": 1.5}})
    problems = raised.value.problems
    assert any(p.startswith("adapt.epoch: unknown key") for p in problems)
    assert any(p.startswith("adapt.mlm_probability") for p in problems)


def test_adapt_in_a_causal_lm_recipe_is_refused_naming_the_key() -> None:
    with pytest.raises(RecipeError) as raised:
        validate_recipe({**MINIMAL, "task": "causal-lm", "adapt": {"path": "tweets.csv"}})
    (problem,) = raised.value.problems
    assert "adapt: task 'causal-lm' does not adapt its teacher" in problem
    assert "already trains on the domain text of [data]" in problem
    validate_recipe({**MINIMAL, "task": "token-classification", "adapt": {}})


def test_validate_checks_the_adaptation_text_before_any_compute(tmp_path: Path) -> None:
    from distill.pipeline.preflight import check_sources

    write_csv(tmp_path / "data.csv", ["text", "label"], synthetic_rows(20))
    write_csv(tmp_path / "tweets.csv", ["body"], [["a tweet"], ["another"]])

    def problems(adapt: dict, data: dict | None = None) -> list[str]:
        recipe = validate_recipe({**MINIMAL, "data": data or {"path": "data.csv"}, "adapt": adapt})
        with pytest.raises(RecipeError) as raised:  # the hub teacher is missing offline too
            check_sources(recipe, tmp_path, "recipe.toml")
        return [p for p in raised.value.problems if p.startswith("adapt")]

    assert problems({"path": "tweets.csv"}) == [
        f"adapt.path: {tmp_path / 'tweets.csv'} has no column 'text' (adapt.text_column); "
        "its columns are ['body']"
    ]
    assert problems({"path": "tweets.csv", "text_column": "body"}) == []
    assert problems({"path": "nowhere.csv"}) == [
        f"adapt.path: 'nowhere.csv' does not exist (looked for {tmp_path / 'nowhere.csv'})"
    ]
    assert problems({"path": "unused"})[0].startswith(
        "adapt.path = 'unused': data.max_examples is not set"
    )
    assert problems({"path": "unused"}, {"path": "data.csv", "max_examples": 10}) == []


def test_which_stages_run_and_what_the_adaptation_depends_on() -> None:
    from distill.pipeline.stages import STAGES, stage_settings

    def recipe(**adapt: object) -> object:
        return validate_recipe({**MINIMAL, "adapt": adapt})

    both, none = recipe(baseline="teacher-and-student"), recipe(baseline="none")
    shared = ["labels", "student", "export", "report"]
    plain = validate_recipe(MINIMAL)
    assert [s.name for s in STAGES if s.active(plain)] == ["data", "teacher", *shared]
    assert [s.name for s in STAGES if s.active(none)] == ["data", "adapt", "teacher", *shared]
    assert [s.name for s in STAGES if s.active(recipe())] == [
        "data", "adapt", "teacher", "plain-teacher", *shared
    ]  # fmt: skip
    assert [s.name for s in STAGES if s.active(both)] == [
        "data", "adapt", "teacher", "plain-teacher", "labels", "student", "plain-labels",
        "plain-student", "export", "report",
    ]  # fmt: skip
    adapt = next(spec for spec in STAGES if spec.name == "adapt")
    # The twins asked for beside it are not the adaptation's: no rerun for them.
    assert stage_settings(adapt, both) == stage_settings(adapt, none)
    assert stage_settings(adapt, none) != stage_settings(adapt, recipe(mlm_probability=0.2))
    # It reads the teacher's model keys, not its fine-tuning budget.
    tuned = validate_recipe(
        {**MINIMAL, "adapt": {}, "teacher": {"model": "some/model", "epochs": 9}}
    )
    assert stage_settings(adapt, tuned) == stage_settings(adapt, recipe())
    assert "teacher.model" in stage_settings(adapt, tuned)
