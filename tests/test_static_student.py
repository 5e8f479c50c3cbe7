"""Static-embedding students (student.init = "static"): the model2vec table, pooling, the
ONNX graph and its int8 table, and the recipe keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from conftest import build_tiny_classifier

from distill.config import validate_recipe
from distill.errors import ModelLoadError, RecipeError
from distill.tasks.classification.models import load_saved_classifier
from distill.tasks.classification.static import is_static
from distill.tasks.classification.static.build import build_static_student
from distill.tasks.classification.static.model import StaticClassifier, StaticConfig
from distill.tasks.classification.static.onnx_graph import (
    export_static,
    int8_table_graph,
    quantize_rows,
)
from distill.tasks.classification.static.table import cached_table, distil_table
from distill.train.models import load_tokenizer

LABELS = ["negative", "positive"]


class _Keys:
    """The static keys of a student table, as build_static_student reads them."""

    def __init__(self, dim: int = 8, pooling: str = "mean", hidden: int = 0) -> None:
        self.static_dim, self.static_pooling, self.static_hidden = dim, pooling, hidden


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("static-teacher"), layers=2)


def _tiny(pooling: str = "mean", hidden: int = 0, vocab: int = 20, seed: int = 0):
    torch.manual_seed(seed)
    model = StaticClassifier(
        StaticConfig(
            vocab_size=vocab, embedding_dim=6, pooling=pooling, hidden_size=hidden, num_labels=3
        )
    )
    with torch.no_grad():
        model.embeddings.weight.normal_()
        if model.token_weights is not None:
            model.token_weights.normal_(std=0.5)
    return model.eval()


def test_table_has_one_row_per_teacher_token_matching_model2vec(teacher: Path) -> None:
    from model2vec.distill import distill_from_model
    from transformers import AutoModel

    tokenizer = load_tokenizer(str(teacher), "teacher")
    table = distil_table(teacher, tokenizer, dim=8)
    assert table.shape == (len(tokenizer), 8)
    reference = distill_from_model(
        AutoModel.from_pretrained(teacher), tokenizer, pca_dims=8, quantize_to="float32"
    )
    rows = reference.tokenizer.get_vocab()
    # model2vec leaves out the special tokens: their rows start at zero, trained with the rest.
    assert "[CLS]" not in rows and not table[tokenizer.cls_token_id].any()
    for token in ("good", "flight", "##7"):
        np.testing.assert_allclose(
            table[tokenizer.convert_tokens_to_ids(token)],
            reference.embedding[rows[token]],
            rtol=1e-5,
            atol=1e-6,
        )


def test_table_dimension_above_the_teacher_width_is_refused(teacher: Path) -> None:
    tokenizer = load_tokenizer(str(teacher), "teacher")
    with pytest.raises(
        ModelLoadError, match=r"static_dim = 64 exceeds the teacher's hidden size 32"
    ):
        distil_table(teacher, tokenizer, dim=64)


def test_trimmed_student_keeps_one_row_per_used_token(teacher: Path, tmp_path: Path) -> None:
    texts = ["good flight today", "bad food 7"]
    model, tokenizer, built = build_static_student(
        _Keys(), teacher, LABELS, trim_texts=texts, max_length=16, cache_dir=tmp_path, seed=0
    )
    full_tokenizer = load_tokenizer(str(teacher), "teacher")
    full = cached_table(tmp_path, teacher, full_tokenizer, 8)
    kept = sorted(
        set(full_tokenizer.all_special_ids)
        | {i for ids in full_tokenizer(texts)["input_ids"] for i in ids}
    )
    assert model.embeddings.weight.shape == (len(kept), 8) == (len(tokenizer), 8)
    assert built["vocabulary"]["vocabulary_after"] == len(kept)
    for new_id, old_id in enumerate(kept):
        token = full_tokenizer.convert_ids_to_tokens(old_id)
        assert tokenizer.convert_tokens_to_ids(token) == new_id
        np.testing.assert_array_equal(
            model.embeddings.weight[new_id].detach().numpy(), full[old_id]
        )
    assert (tmp_path / "table-8.npy").is_file()  # computed once, reused by the twin


@pytest.mark.parametrize("pooling", ["mean", "weighted"])
def test_pooling_ignores_padding(pooling: str) -> None:
    model = _tiny(pooling)
    ids = torch.tensor([[2, 7, 9, 3]])
    padded = torch.tensor([[2, 7, 9, 3, 0, 0, 5]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    with_pad = model(input_ids=padded, attention_mask=mask).logits
    torch.testing.assert_close(alone, with_pad)
    rows = model.embeddings.weight[ids[0]]
    weights = torch.ones(4) if pooling == "mean" else torch.exp(model.token_weights[ids[0]])
    expected = model.head((rows * weights[:, None]).sum(0) / weights.sum())
    torch.testing.assert_close(alone[0], expected)


@pytest.mark.parametrize(("pooling", "hidden"), [("mean", 0), ("weighted", 5)])
def test_onnx_graph_matches_pytorch(pooling: str, hidden: int, tmp_path: Path) -> None:
    from distill.serving.session import onnx_session

    model = _tiny(pooling, hidden)
    path = export_static(model, tmp_path / "model.onnx")
    ids = torch.tensor([[2, 7, 9, 3, 0], [2, 4, 3, 0, 0], [0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    session = onnx_session(path, 1)
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.isfinite(got).all()  # an all-padding row pools to zeros, not NaN


def test_int8_table_round_trip_error_is_half_a_row_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 16)).astype(np.float32) * rng.uniform(0.01, 3, size=(50, 1))
    table[3] = 0.0  # an all-zero row ([unusedN]) keeps a usable scale
    q, scales = quantize_rows(table)
    assert q.dtype == np.int8 and scales.shape == (50,)
    error = np.abs(q.astype(np.float32) * scales[:, None] - table)
    assert (error <= scales[:, None] / 2 + 1e-7).all()
    assert np.abs(q).max() == 127 and (q[3] == 0).all()
    model = _tiny("weighted", 4, vocab=50)
    fp32 = export_static(model, tmp_path / "fp32.onnx")
    int8 = int8_table_graph(fp32, tmp_path / "int8" / "model_quantized.onnx")
    assert int8.stat().st_size < fp32.stat().st_size
    from distill.serving.session import onnx_session

    feeds = {"input_ids": np.array([[1, 5, 9, 30]]), "attention_mask": np.ones((1, 4), np.int64)}
    a = onnx_session(fp32, 1).run(["logits"], feeds)[0]
    b = onnx_session(int8, 1).run(["logits"], feeds)[0]
    assert 0 < np.abs(a - b).max() < 0.05


def test_saved_student_reloads_as_a_sequence_classifier(tmp_path: Path) -> None:
    model = _tiny("weighted", 3)
    model.save_pretrained(tmp_path / "student")
    assert is_static(tmp_path / "student") and not is_static(tmp_path)
    again = load_saved_classifier(tmp_path / "student")
    assert isinstance(again, StaticClassifier)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, again.eval()(input_ids=ids).logits)


RECIPE = """name = "r"
task = "{task}"
[data]
path = "d.csv"
[teacher]
model = "t"
[student]
{student}
"""


def _errors(student: str, task: str = "sequence-classification") -> str:
    with pytest.raises(RecipeError) as caught:
        validate_recipe(tomllib.loads(RECIPE.format(task=task, student=student)))
    return str(caught.value)


def test_static_student_with_layer_keys_is_refused_naming_them() -> None:
    message = _errors('init = "static"\nnum_layers = 2\nhidden_weight = 1.0')
    assert "init = 'static' builds a token-embedding table" in message
    assert "student.num_layers, student.hidden_weight would be ignored" in message


def test_static_keys_on_a_transformer_student_are_refused() -> None:
    message = _errors("num_layers = 2\nstatic_dim = 64\nstatic_hidden = 8")
    assert "student.static_dim, student.static_hidden are only used with init = 'static'" in message


def test_static_variant_inherits_no_layer_keys() -> None:
    recipe = validate_recipe(
        tomllib.loads(
            RECIPE.format(
                task="sequence-classification",
                student='num_layers = 2\n[student.variants.fast]\ninit = "static"\nstatic_dim = 64',
            )
        )
    )
    fast = recipe.student.variant("fast")
    assert (fast.init, fast.static_dim, fast.num_layers) == ("static", 64, None)
    message = _errors(
        'num_layers = 2\nhidden_weight = 1.0\n[student.variants.fast]\ninit = "static"'
    )
    assert "variants.fast" in message and "student.hidden_weight would be ignored" in message


@pytest.mark.parametrize("task", ["causal-lm", "token-classification"])
def test_static_students_are_classification_only(task: str) -> None:
    message = _errors('init = "static"', task=task)
    assert f"student.init = 'static' is not supported for task {task!r}" in message


@pytest.mark.parametrize("task", ["causal-lm", "token-classification"])
def test_a_static_student_with_layer_keys_outside_classification_is_told_that_first(
    task: str,
) -> None:
    """The layer keys' complaints used to come first, the task's refusal not at all."""
    with pytest.raises(RecipeError) as caught:
        validate_recipe(
            tomllib.loads(
                RECIPE.format(
                    task=task,
                    student='init = "static"\nnum_layers = 2\nhidden_weight = 1.0\nstatic_dim = 64',
                )
            )
        )
    (problem,) = caught.value.problems
    assert problem == (
        f"(top level): student.init = 'static' is not supported for task {task!r}: 'static' "
        "students are built by task 'sequence-classification' only (this task builds: "
        "'teacher-layers', 'pretrained', 'config')"
    )


QUICKSTART = Path(__file__).parent.parent / "recipes" / "quickstart.toml"


def test_a_static_variant_gets_the_static_budget_not_the_transformer_students() -> None:
    """#27.15: the variant inherited the quick start's 3e-4 and 2 epochs (59.3%, below TF-IDF)."""
    from distill.config import load_recipe
    from distill.tasks.classification.keys import STATIC

    recipe, _ = load_recipe(QUICKSTART, ["student.variants.static.init=static"])
    main, static = recipe.student.variant("main"), recipe.student.variant("static")
    assert (main.learning_rate, main.epochs) == (3e-4, 2.0)  # the recipe's, for its student
    assert static.learning_rate is None
    assert static.default_learning_rate() == (3e-3, "static student (token table and head)")
    assert static.epochs == STATIC.defaults["epochs"] == 6.0
    assert static.static_hidden == 256  # a hidden layer: +1.7 points over a linear head
    # Shared keys of no particular kind are still inherited.
    assert (static.batch_size, static.alpha, static.temperature) == (32, 0.7, 2.0)
    # What the variant sets wins.
    recipe, _ = load_recipe(
        QUICKSTART,
        [
            "student.variants.static.init=static",
            "student.variants.static.epochs=4",
            "student.variants.static.learning_rate=1e-2",
            "student.variants.static.static_hidden=0",
        ],
    )
    static = recipe.student.variant("static")
    assert (static.learning_rate, static.epochs, static.static_hidden) == (1e-2, 4.0, 0)


def test_a_static_primary_keeps_what_it_sets_and_lends_it_to_its_own_kind_only() -> None:
    body = 'init = "static"\nepochs = 9\nlearning_rate = 1e-2'
    recipe = validate_recipe(
        tomllib.loads(
            RECIPE.format(task="sequence-classification", student=body)
            + "[student.variants.other]\nstatic_dim = 64\n"
            + '[student.variants.layers]\ninit = "teacher-layers"\nnum_layers = 1\n'
        )
    )
    main = recipe.student.variant("main")
    assert (main.learning_rate, main.epochs, main.static_hidden) == (1e-2, 9.0, 256)
    other = recipe.student.variant("other")  # a static variant: the primary's budget
    assert (other.learning_rate, other.epochs, other.static_dim) == (1e-2, 9.0, 64)
    layers = recipe.student.variant("layers")  # a transformer: the transformer defaults
    assert (layers.learning_rate, layers.epochs) == (None, 3.0)
    assert layers.default_learning_rate()[0] == 1e-4
    # A static primary that sets no epochs trains the static default.
    unset = validate_recipe(
        tomllib.loads(RECIPE.format(task="sequence-classification", student='init = "static"'))
    )
    assert unset.student.epochs == 6.0


def test_the_verdict_says_a_variant_student_below_the_tfidf_floor_plainly() -> None:
    from distill.tasks.classification.report.verdict import headline

    rows = [
        {"key": "teacher", "name": "Teacher", "accuracy": 0.76, "bytes": 90, "deployed": False},
        {
            "key": "student_onnx_int8",
            "name": "Student ONNX int8",
            "accuracy": 0.755,
            "bytes": 8,
            "deployed": True,
        },
        {"key": "tfidf", "name": "TF-IDF", "accuracy": 0.721, "bytes": 1, "deployed": False},
    ]
    students = [
        {"name": "main", "accuracy": 0.755},
        {"name": "static", "accuracy": 0.593},
        {"name": "tie", "accuracy": 0.721},
        {"name": "good", "accuracy": 0.735},
    ]
    assert headline(rows, students)["floor_warnings"] == [
        "Warning: student variant 'static' (59.3% as deployed) is below the TF-IDF + "
        "logistic-regression floor (72.1%) on test accuracy: no better than a bag of words; "
        "check its learning_rate and epochs.",
        "Warning: student variant 'tie' (72.1% as deployed) only ties the TF-IDF + "
        "logistic-regression floor (72.1%) on test accuracy: no better than a bag of words; "
        "check its learning_rate and epochs.",
    ]
    rows[1]["accuracy"] = 0.70  # the deployed student below the floor: its own sentence
    warnings = headline(rows, students[:1])["floor_warnings"]
    assert warnings == [
        "Warning: the deployed student (Student ONNX int8, 70.0%) is below the TF-IDF + "
        "logistic-regression floor (72.1%) on test accuracy."
    ]
