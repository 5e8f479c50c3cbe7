"""The command line: validate, schema, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import main
from distill.config import recipe_json_schema

ROOT = Path(__file__).parent.parent


def write_recipe(folder: Path, body: str) -> Path:
    path = folder / "recipe.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_committed_schema_matches_the_code() -> None:
    committed = json.loads((ROOT / "recipes" / "recipe.schema.json").read_text(encoding="utf-8"))
    assert committed == recipe_json_schema(), "run: distill schema -o recipes/recipe.schema.json"


def test_shipped_recipes_declare_the_schema() -> None:
    for recipe in (ROOT / "recipes").glob("*.toml"):
        assert recipe.read_text(encoding="utf-8").startswith("#:schema ./recipe.schema.json"), (
            recipe.name
        )


def test_validate_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "recipes" / "quickstart.toml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_reports_every_problem_with_exit_2(tmp_path: Path, sentiment_csv: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        f"""
name = "x"
[data]
path = "{sentiment_csv}"
[teacher]
model = "./no-such-folder"
epochs = -1
[student]
num_layers = 2
alpha = 3
""",
    )
    result = subprocess.run(
        [sys.executable, "-m", "distill", "validate", str(recipe), "--set", "student.colour=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "teacher.epochs: Input should be greater than 0" in result.stderr
    assert "student.alpha: Input should be less than or equal to 1" in result.stderr
    assert "student.colour: unknown key" in result.stderr


def test_sources_are_checked_before_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
name = "x"
[data]
path = "missing.csv"
[teacher]
model = "./no-such-folder"
[student]
num_layers = 2
""",
    )
    assert main(["run", str(recipe), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data.path: 'missing.csv' does not exist" in err
    assert "teacher.model: './no-such-folder' does not exist" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_schema_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "student" in schema["properties"] and schema["additionalProperties"] is False


# --------------------------------------------------------------------------- preflight


def _model_folder(folder: Path, **config: object) -> Path:
    """A model folder as validate sees it: config.json and (empty) safetensors weights."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def _validate(recipe: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", str(recipe)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_refuses_max_length_beyond_the_teachers_positions(
    tmp_path: Path, sentiment_csv: Path, tiny_model_dir: Path, capsys
) -> None:
    body = f"""
name = "x"
[data]
path = "{sentiment_csv}"
max_length = {{}}
[teacher]
model = "{tiny_model_dir}"
[student]
num_layers = 2
"""
    code, _, err = _validate(write_recipe(tmp_path, body.format(128)), capsys)
    assert code == 2
    assert (
        f"data.max_length: 128 exceeds the 64 token positions of teacher.model "
        f"'{tiny_model_dir}' (max_position_embeddings = 64); set data.max_length to at most 64"
    ) in err
    code, out, err = _validate(write_recipe(tmp_path, body.format(64)), capsys)
    assert code == 0 and "ok" in out, err


def test_validate_checks_max_length_of_pretrained_and_config_students(
    tmp_path: Path, sentiment_csv: Path, capsys
) -> None:
    bert = _model_folder(tmp_path / "bert", model_type="bert", max_position_embeddings=512)
    # RoBERTa's position ids start after pad_token_id: 66 rows hold 64 tokens.
    roberta = _model_folder(
        tmp_path / "roberta", model_type="roberta", max_position_embeddings=66, pad_token_id=1
    )
    body = f"""
name = "x"
[data]
path = "{sentiment_csv}"
max_length = 65
[teacher]
model = "{bert}"
[student]
init = "pretrained"
model = "{roberta}"
[student.variants.small]
init = "config"
config = {{ max_position_embeddings = 32, num_hidden_layers = 2 }}
"""
    code, _, err = _validate(write_recipe(tmp_path, body), capsys)
    assert code == 2
    assert f"65 exceeds the 64 token positions of student.model '{roberta}'" in err
    assert "less 2 because roberta position ids start after the padding id" in err
    assert "65 exceeds the 32 token positions of student.variants.small.config" in err
    assert "teacher.model" not in err


def _recipe_with_hub_models(folder: Path, data: Path) -> Path:
    return write_recipe(
        folder,
        f"""
name = "x"
[data]
path = "{data}"
[teacher]
model = "someone/teacher-model"
[student]
init = "pretrained"
model = "someone/student-model"
""",
    )


def test_validate_offline_refuses_a_hub_model_missing_from_an_empty_cache(
    tmp_path: Path, sentiment_csv: Path
) -> None:
    from conftest import run_command

    recipe = _recipe_with_hub_models(tmp_path, sentiment_csv)
    command = [sys.executable, "-m", "distill", "validate", str(recipe)]
    result = run_command(command, tmp_path, HF_HOME=str(tmp_path / "hf"))  # offline, empty
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    for key, repo in (
        ("teacher.model", "someone/teacher-model"),
        ("student.model", "someone/student-model"),
    ):
        assert f"{key}: '{repo}' is not in the local Hugging Face cache" in result.stderr


def _fake_cache(root: Path, repo_id: str, **config: object) -> Path:
    """The hub cache layout huggingface_hub reads: refs/main -> snapshots/<commit>/."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    _model_folder(repo / "snapshots" / ("0" * 40), **config)
    return repo


def test_validate_offline_reads_a_cached_hub_models_config(
    tmp_path: Path, sentiment_csv: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    _fake_cache(tmp_path / "cache", "someone/teacher-model", max_position_embeddings=512)
    _fake_cache(tmp_path / "cache", "someone/student-model", max_position_embeddings=100)
    code, _, err = _validate(_recipe_with_hub_models(tmp_path, sentiment_csv), capsys)
    assert code == 2  # cached, so checked: the student's positions are too few for 128
    assert "128 exceeds the 100 token positions of student.model 'someone/student-model'" in err
    assert "teacher" not in err


def _online_with_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_validate_online_without_network_fails_once_and_fast_with_a_hint(
    tmp_path: Path, sentiment_csv: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    from huggingface_hub import HfApi

    calls = []

    def unreachable(self: object, repo_id: str, **kwargs: object) -> None:
        calls.append((repo_id, kwargs))
        raise requests.ConnectionError("Failed to resolve 'huggingface.co'")

    _online_with_an_empty_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(HfApi, "repo_info", unreachable)
    code, _, err = _validate(_recipe_with_hub_models(tmp_path, sentiment_csv), capsys)
    assert code == 2
    assert len(calls) == 1 and calls[0][1]["timeout"] <= 10  # one short request, no storm
    assert (
        "teacher.model: cannot reach the Hugging Face Hub to check model 'someone/teacher-model'"
        in err
    )
    assert "set HF_HUB_OFFLINE=1 and pre-download it" in err
    assert "not checked, the hub being unreachable: student.model 'someone/student-model'" in err


def test_validate_online_names_a_hub_model_that_does_not_exist(
    tmp_path: Path, sentiment_csv: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    from huggingface_hub import HfApi, file_download
    from huggingface_hub.errors import RepositoryNotFoundError

    def repo_info(self: object, repo_id: str, **kwargs: object) -> None:
        if repo_id == "someone/student-model":
            response = requests.Response()
            response.status_code = 404
            raise RepositoryNotFoundError("404 Client Error", response=response)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests never download")

    _online_with_an_empty_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(file_download, "hf_hub_download", no_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    code, _, err = _validate(_recipe_with_hub_models(tmp_path, sentiment_csv), capsys)
    assert code == 2
    assert "student.model: no model 'someone/student-model' on the Hugging Face Hub" in err
    assert "teacher.model" not in err


def test_validate_checks_max_length_of_a_causal_lm_teacher(tmp_path: Path, capsys) -> None:
    (tmp_path / "texts.csv").write_text("text\nthe cat sat\n", encoding="utf-8")
    llama = _model_folder(tmp_path / "lm", model_type="llama", max_position_embeddings=32)
    body = f"""
name = "x"
task = "causal-lm"
[data]
path = "texts.csv"
max_length = 48
[teacher]
model = "{llama}"
[student]
num_layers = 1
"""
    code, _, err = _validate(write_recipe(tmp_path, body), capsys)
    assert code == 2
    assert f"data.max_length: 48 exceeds the 32 token positions of teacher.model '{llama}'" in err


def _recipe_with_hub_data(folder: Path, model: Path) -> Path:
    body = f"""
name = "x"
[data]
path = "someone/reviews"
[teacher]
model = "{model}"
[student]
num_layers = 1
"""
    return write_recipe(folder, body)


def test_validate_offline_refuses_a_hub_dataset_in_neither_cache(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    model = _model_folder(tmp_path / "bert", model_type="bert", max_position_embeddings=512)
    recipe = _recipe_with_hub_data(tmp_path, model)
    code, _, err = _validate(recipe, capsys)
    assert code == 2
    assert "data.path: hub dataset 'someone/reviews' is in neither local cache" in err
    (tmp_path / "datasets" / "someone___reviews").mkdir(parents=True)  # prepared once online
    code, out, err = _validate(recipe, capsys)
    assert code == 0 and "ok" in out, err


def test_validate_online_names_a_hub_dataset_that_does_not_exist(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    calls = []

    def repo_info(self: object, repo_id: str, **kwargs: object) -> None:
        calls.append(kwargs["repo_type"])
        response = requests.Response()
        response.status_code = 404
        raise RepositoryNotFoundError("404 Client Error", response=response)

    _online_with_an_empty_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    model = _model_folder(tmp_path / "bert", model_type="bert", max_position_embeddings=512)
    code, _, err = _validate(_recipe_with_hub_data(tmp_path, model), capsys)
    assert code == 2 and calls == ["dataset"]
    assert "data.path: no dataset 'someone/reviews' on the Hugging Face Hub" in err


# --------------------------------------------------------------------------- data headers


def _recipe_over(folder: Path, data: str, task: str = "sequence-classification") -> Path:
    teacher = _model_folder(folder / "teacher", model_type="bert", max_position_embeddings=512)
    return write_recipe(
        folder,
        f'name = "x"\ntask = "{task}"\n[data]\n{data}\n[teacher]\nmodel = "{teacher}"\n'
        "[student]\nnum_layers = 1\n",
    )


def test_validate_reads_the_header_of_each_data_file_for_missing_and_repeated_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate said ok, then the run failed at the data stage."""
    (tmp_path / "train.csv").write_text("text,sentiment\ngood,pos\n", encoding="utf-8")
    (tmp_path / "valid.csv").write_text("text,label,text\ngood,pos,again\n", encoding="utf-8")
    (tmp_path / "test.jsonl").write_text('\n{"text": "a", "lab": "pos"}\n', encoding="utf-8")
    recipe = _recipe_over(
        tmp_path,
        'path = "train.csv"\nvalidation_path = "valid.csv"\ntest_path = "test.jsonl"\n'
        'id_column = "id"',
    )
    code, out, err = _validate(recipe, capsys)
    assert (code, out) == (2, "")
    assert (
        f"data.path: {tmp_path / 'train.csv'} has no column 'label' (data.label_column), 'id' "
        "(data.id_column); its columns are ['text', 'sentiment']"
    ) in err
    assert (
        f"{tmp_path / 'valid.csv'}: line 1: the header repeats column name(s): 'text' is "
        "columns 1, 3; give every column a unique name"
    ) in err
    assert (
        f"data.test_path: {tmp_path / 'test.jsonl'} has no column 'label' (data.label_column), "
        "'id' (data.id_column); its first line has the keys ['text', 'lab']"
    ) in err
    assert main(["run", str(recipe), "--workdir", str(tmp_path)]) == 2  # before any compute
    assert "has no column 'label'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("task", "name", "content"),
    [
        ("sequence-classification", "data.tsv", "id\tlabel\ttext\n1\tpos\tgood\n"),
        ("sequence-classification", "data.csv", "\ufefftext,label\ngood,pos\n"),  # Excel's BOM
        ("causal-lm", "data.csv", "text\nonce upon a time\n"),  # plain text: no label column
        ("token-classification", "data.conll", "EU B-ORG\nrejects O\n"),  # columns by position
        ("token-classification", "data.jsonl", '{"tokens": ["EU"], "tags": ["B-ORG"]}\n'),
    ],
)
def test_validate_passes_data_files_with_the_columns_each_task_reads(
    tmp_path: Path, task: str, name: str, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    code, out, err = _validate(_recipe_over(tmp_path, f'path = "{name}"', task), capsys)
    assert "column" not in err
    assert code == 0, err
    assert "ok" in out


def test_validate_names_the_ner_columns_missing_from_a_json_lines_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ner.jsonl").write_text('{"words": ["EU"], "tags": ["B-ORG"]}\n', "utf-8")
    recipe = _recipe_over(tmp_path, 'path = "ner.jsonl"', "token-classification")
    code, _, err = _validate(recipe, capsys)
    assert code == 2
    assert "has no column 'tokens' (data.tokens_column); its first line has the keys" in err


def test_predict_help_describes_each_predict_task_and_takes_its_flags(capsys) -> None:
    """`distill predict --help` is composed from the tasks predict serves: what each does, its
    output line, its --json fields, and the flags its bundles take."""
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse re-wraps the lines
    assert (
        text.count(
            "Classify texts, find their named entities or answer questions about a context "
            "with an exported bundle"
        )
        == 1
    )
    assert (
        "label<TAB>probability<TAB>every label=probability for a classifier, "
        "type:start-end:text per entity, tab-separated (empty: none), for an NER bundle, "
        "answer<TAB>start<TAB>end<TAB>score for a QA bundle (empty answer: none)"
    ) in text
    assert (
        "print JSON lines: text, label, probability, probabilities per label "
        "(NER: text, entities with type, text, start, end, score) "
        "(QA: question, answer, its start and end in the context, score)"
    ) in text
    assert "--context TEXT for a question-answering bundle: the context" in text
    assert "--aggregation STRATEGY for a bundle that finds entities" in text
