"""The one bundle reader (distill.export.bundle) on small hand-made bundles: the manifest the
writer makes reads back, each kind of damage is refused naming the file, the task comes from
the registry, and the module imports without torch."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from conftest import run_command

from distill.cli import main
from distill.errors import ArtifactError
from distill.export import bundle as bundle_module
from distill.export.bundle import read_bundle, write_bundle_manifest
from distill.tasks import TASKS


def tiny_graph(path: Path, weights: str | None = None) -> Path:
    """A one-MatMul ONNX graph at ``path``; its weight in the file ``weights`` beside it
    (ONNX external data) when given."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    if weights is None:
        onnx.save_model(model, path)
    else:
        onnx.save_model(model, path, save_as_external_data=True, location=weights, size_threshold=0)
    return path


def _bundle(folder: Path, task: str = "text-generation", **info: object) -> Path:
    """A bundle of a tiny graph and a placeholder tokenizer (the reader never parses it),
    plus any ``config.json`` already in ``folder``, and its manifest."""
    folder.mkdir(exist_ok=True)
    tiny_graph(folder / "model.onnx")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    roles = {"model.onnx": "model", "tokenizer.json": "tokenizer"}
    if (folder / "config.json").is_file():
        roles["config.json"] = "config"
    write_bundle_manifest(folder, roles, {"task": task, "model": "model.onnx", **info})
    return folder


def _edit(folder: Path, **fields: object) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}), encoding="utf-8")


@pytest.mark.parametrize("task", [task.name for task in TASKS.values()])
def test_a_written_manifest_reads_back_with_its_task(tmp_path: Path, task: str) -> None:
    bundle_task = TASKS[task].bundle_task
    folder = _bundle(tmp_path / "b", bundle_task)
    bundle = read_bundle(folder, command=TASKS[task].command)
    assert bundle.task.name == task and bundle.model_path == folder / "model.onnx"
    assert bundle.manifest == json.loads((folder / "manifest.json").read_text())


def test_a_flipped_byte_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b")
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{model}: sha256 differs from manifest.json"):
        read_bundle(folder)


def test_every_problem_with_the_files_is_listed(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b")
    size = (folder / "model.onnx").stat().st_size
    (folder / "tokenizer.json").unlink()
    (folder / "model.onnx").write_bytes(b"short")
    with pytest.raises(ArtifactError) as caught:
        read_bundle(folder)
    message = str(caught.value)
    assert "2 problems" in message and f"{folder / 'tokenizer.json'}: missing" in message
    assert f"{folder / 'model.onnx'}: 5 bytes, but manifest.json records {size}" in message


def _no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path, *args: object, **kwargs: object) -> str:
        raise AssertionError(f"{path} was hashed")

    monkeypatch.setattr(bundle_module, "sha256_file", refuse)


def test_a_huge_sparse_file_of_another_size_is_refused_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _bundle(tmp_path / "b")
    model = folder / "model.onnx"
    with model.open("r+b") as handle:
        try:
            handle.truncate(1 << 40)  # 1 TB, sparse: nothing written
        except OSError as exc:
            pytest.skip(f"no 1 TB sparse file on this file system ({exc})")
    _no_hashing(monkeypatch)
    try:
        with pytest.raises(ArtifactError) as caught:
            read_bundle(folder)
    finally:
        model.unlink()  # pytest keeps its last runs' folders: no 1 TB file left behind
    recorded = json.loads((folder / "manifest.json").read_text())["files"]["model.onnx"]["bytes"]
    assert str(caught.value) == (
        f"{model}: 1099511627776 bytes, but manifest.json records {recorded}; "
        "the file was changed after export"
    )


def test_a_resized_file_refuses_the_bundle_before_any_file_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _bundle(tmp_path / "b")
    (folder / "tokenizer.json").write_text("{ }", encoding="utf-8")  # listed first: model.onnx
    _no_hashing(monkeypatch)
    with pytest.raises(
        ArtifactError, match=r"tokenizer\.json: 3 bytes, but manifest\.json records 2"
    ):
        read_bundle(folder)


def test_hashing_a_large_file_says_so_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _bundle(tmp_path / "b")
    size = (folder / "model.onnx").stat().st_size
    monkeypatch.setattr(bundle_module, "LARGE_FILE", size)  # model.onnx is large, not tokenizer
    monkeypatch.setattr(bundle_module, "PROGRESS_S", 0.0)
    with caplog.at_level(logging.INFO, logger="distill"):
        read_bundle(folder)
    assert [r.getMessage() for r in caplog.records] == [
        f"checking the sha256 of {folder / 'model.onnx'} (0 MiB) against manifest.json",
        "  model.onnx: 100% of 0 MiB read",
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"format": "other"}, "'format' is 'other', expected 'distill-onnx-bundle'"),
        ({"format_version": 99}, "format_version 99 is newer than this distill reads"),
        ({"task": "fill-mask"}, "task is 'fill-mask'; distill bundles have"),
        ({"model": "../model.onnx"}, "'model' must be a relative path inside the bundle"),
        ({"model": "other.onnx"}, "'files' does not list other.onnx"),
        ({"files": []}, "'files' must map each file to its role, sha256 and bytes"),
        ({"files": {"/etc/passwd": {}}}, "'files' lists '/etc/passwd', which is not a path"),
    ],
)
def test_an_edited_manifest_is_refused(tmp_path: Path, fields: dict, expected: str) -> None:
    folder = _bundle(tmp_path / "b")
    _edit(folder, **fields)
    with pytest.raises(ArtifactError) as caught:
        read_bundle(folder)
    assert f"{folder / 'manifest.json'}: {expected}" in str(caught.value)


BERT = {
    "model_type": "bert",
    "max_position_embeddings": 64,
    "architectures": ["BertForSequenceClassification"],
    "id2label": {"0": "negative", "1": "positive"},
}
ROBERTA = {**BERT, "model_type": "roberta", "max_position_embeddings": 66, "pad_token_id": 1}


def _configured(folder: Path, config: dict, task: str, **info: object) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return _bundle(folder, task, **info)


@pytest.mark.parametrize(
    ("config", "task", "info", "expected"),
    [
        (
            BERT,
            "text-classification",
            {"max_length": 1000},
            "'max_length' is 1000, but the model takes at most 64 tokens "
            "(max_position_embeddings = 64 in {config})",
        ),
        (
            ROBERTA,
            "text-classification",
            {"max_length": 65},
            "'max_length' is 65, but the model takes at most 64 tokens "
            "(max_position_embeddings = 66, less 2 because roberta position ids start after "
            "the padding id in {config})",
        ),
        (
            BERT,
            "text-classification",
            {"labels": ["a", "b", "c"]},
            "'labels' ['a', 'b', 'c'] do not match the model's 2 labels "
            "(id2label ['negative', 'positive'] in {config})",
        ),
        (
            {"num_labels": 4},
            "token-classification",
            {"labels": ["O", "B-x", "I-x"]},
            "'labels' ['O', 'B-x', 'I-x'] do not match the model's 4 labels "
            "(num_labels = 4 in {config})",
        ),
        (
            BERT,
            "token-classification",
            {},
            "'task' is 'token-classification', but 'architectures' "
            "['BertForSequenceClassification'] in {config} is a text-classification model",
        ),
        (
            {"architectures": ["LlamaForCausalLM"]},
            "text-classification",
            {},
            "'task' is 'text-classification', but 'architectures' ['LlamaForCausalLM'] in "
            "{config} is a text-generation model",
        ),
    ],
    ids=["positions", "roberta-positions", "labels", "num-labels", "task", "causal-lm"],
)
def test_a_manifest_the_model_config_contradicts_is_refused(
    tmp_path: Path, config: dict, task: str, info: dict, expected: str
) -> None:
    """The manifest is not checksummed: its values are checked against config.json (which
    is), each problem naming the key, its value and the config's."""
    folder = _configured(tmp_path / "b", config, task, **info)
    with pytest.raises(ArtifactError) as caught:
        read_bundle(folder)
    expected = expected.format(config=folder / "config.json")
    assert str(caught.value) == (
        f"{folder / 'manifest.json'}: {expected}; was manifest.json edited?"
    )


@pytest.mark.parametrize(
    ("config", "info"),
    [
        (BERT, {"max_length": 64, "labels": ["negative", "positive"]}),
        (ROBERTA, {"max_length": 64}),
        ({"architectures": ["StaticClassifier"], "model_type": "distill-static"}, {}),
        ({"model_type": "t5"}, {"max_length": 100_000}),  # no position table: unbounded
    ],
    ids=["bert", "roberta", "own-model-type", "no-positions"],
)
def test_a_manifest_the_model_config_agrees_with_is_read(
    tmp_path: Path, config: dict, info: dict
) -> None:
    folder = _configured(tmp_path / "b", config, "text-classification", **info)
    assert read_bundle(folder).task.bundle_task == "text-classification"  # read, not refused


def test_an_unreadable_config_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "config.json").write_text("[1]", encoding="utf-8")
    _bundle(folder, "text-classification")
    with pytest.raises(ArtifactError, match=r"config\.json: not a readable model config"):
        read_bundle(folder)


# --------------------------------------------------------------------------- external data


def _rewrite_manifest(folder: Path) -> None:
    """The manifest written again for the folder as it is: every checksum right."""
    roles = {p.name: "model" for p in folder.iterdir() if p.name != "manifest.json"}
    write_bundle_manifest(folder, roles, {"task": "text-generation", "model": "model.onnx"})


def _external_bundle(folder: Path, location: str | None = "w.bin") -> Path:
    """A bundle whose graph keeps its weight in ``w.bin`` (listed); with another
    ``location`` (None: none) the graph's field is rewritten, ``w.bin`` removed and the
    manifest written again, so that only the external-data check can tell."""
    import onnx

    folder.mkdir()
    tiny_graph(folder / "model.onnx", weights="w.bin")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    if location != "w.bin":
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        (weight,) = model.graph.initializer
        entries = [e for e in weight.external_data if e.key != "location"]
        del weight.external_data[:]
        weight.external_data.extend(entries)
        if location is not None:
            weight.external_data.add(key="location", value=location)
        onnx.save_model(model, str(folder / "model.onnx"))
        (folder / "w.bin").unlink()
    _rewrite_manifest(folder)
    return folder


def _refused(folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> str:
    """`distill generate` on the bundle: exit 2, one error, no traceback, and onnxruntime
    never asked to open the graph; returns the message."""
    import onnxruntime

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("onnxruntime opened the graph")

    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    code = main(["generate", str(folder), "hello"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    return captured.err


def test_listed_external_data_is_read_and_loads(tmp_path: Path) -> None:
    import numpy as np

    from distill.serving.session import onnx_session

    folder = _external_bundle(tmp_path / "b")
    bundle = read_bundle(folder)
    assert set(bundle.manifest["files"]) == {"model.onnx", "w.bin", "tokenizer.json"}
    (result,) = onnx_session(bundle.model_path, 1).run(None, {"X": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(
        result, np.arange(16, dtype=np.float32).reshape(4, 4).sum(0)[None]
    )


def test_external_data_the_manifest_does_not_list_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _external_bundle(tmp_path / "b")
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["w.bin"]  # the weights left out of the list (and of its checksums)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    err = _refused(folder, capsys, monkeypatch)
    assert err == (
        f"error: {folder / 'model.onnx'}: tensor 'W' reads its data from 'w.bin' "
        f"({folder / 'w.bin'}), which manifest.json does not list; every file the bundle "
        "loads must be listed with its sha256\n"
    )


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("..", "reads its data from '../w.bin', a path with '..'; refused (external data "),
        ("absolute", "reads its data from '{outside}', an absolute path; refused (external "),
        ("link", "reads its data from 'w.bin', a link to {outside}, outside the bundle; refused"),
    ],
)
def test_external_data_outside_the_bundle_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    expected: str,
) -> None:
    tiny_graph(tmp_path / "source.onnx", weights="w.bin")  # weights outside the bundle
    outside = (tmp_path / "w.bin").resolve()
    if where == "link":  # listed, its checksum (the target's) right: a link out all the same
        folder = _external_bundle(tmp_path / "b")
        (folder / "w.bin").unlink()
        (folder / "w.bin").symlink_to(outside)
        _rewrite_manifest(folder)
    else:
        folder = _external_bundle(tmp_path / "b", "../w.bin" if where == ".." else str(outside))
    err = _refused(folder, capsys, monkeypatch)
    assert err.startswith(
        f"error: {folder / 'model.onnx'}: tensor 'W' {expected.format(outside=outside)}"
    ), err


def test_an_external_tensor_without_a_location_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _external_bundle(tmp_path / "b", None)
    err = _refused(folder, capsys, monkeypatch)
    assert err == (
        f"error: {folder / 'model.onnx'}: tensor 'W' is stored outside the graph in no file "
        "(its 'location' is missing)\n"
    )


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b")
    (folder / "manifest.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ArtifactError, match="expected a JSON object, found list"):
        read_bundle(folder)


def test_another_verbs_bundle_gets_a_hint_before_any_file_is_hashed(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b", "text-generation")
    (folder / "model.onnx").write_bytes(b"damaged")  # the hint comes first all the same
    with pytest.raises(ArtifactError) as caught:
        read_bundle(folder, command="predict")
    assert str(caught.value) == (
        f"{folder / 'manifest.json'}: task is 'text-generation', not 'text-classification', "
        "'token-classification' or 'question-answering': not a text-classification, "
        "token-classification or question-answering bundle; use `distill generate` for it"
    )


def test_the_reader_imports_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import distill.export.bundle\n"
        "print(sorted(m for m in ('torch', 'transformers', 'optimum', 'onnxruntime') "
        "if m in sys.modules))\n"
    )
    result = run_command([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("task", [t.name for t in TASKS.values() if t.bench is None])
def test_bench_refuses_a_bundle_of_a_task_it_cannot_time_naming_both(
    tmp_path: Path, task: str
) -> None:
    from distill.timing import bench

    (tmp_path / "export").mkdir()
    folder = _bundle(tmp_path / "export" / "run", TASKS[task].bundle_task)
    with pytest.raises(ArtifactError) as caught:
        bench.locate(folder)
    assert str(caught.value) == (
        f"{folder}: a {task!r} bundle; distill bench times bundles of task "
        "'sequence-classification', 'token-classification' only (yet); its run's report times "
        "every model of the run "
        "instead"
    )
