"""The report's "what adaptation bought" section (classification and NER): the plain twin's
row in the main table, the ``adaptation`` section (the adapt stage's text and masked-LM
figures, the adapted teacher's gain over its plain twin and the paired test), rendered in
Markdown and HTML; and none of it without the ``adapt`` / ``plain-teacher`` folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from task_projects import NAME, Project
from test_report import _Checker, _noisy_logits, run_report

from distill.config import ReportConfig
from distill.data.files import save_logits
from distill.pipeline.artifacts import RunContext, read_manifest, write_manifest
from distill.report.adaptation import NO_TWIN
from distill.report.significance import paired_comparison, paired_f1_comparison
from distill.tasks.classification.metrics import classification_metrics

# Would break the HTML or a Markdown table if written unescaped.
TEXT_PATH = "corpora/<b>domain</b>|news.txt"
ADAPT_METRICS = {
    "text": {
        "source": "adapt.path",
        "path": TEXT_PATH,
        "texts": 1234,
        "held_out": 60,
        "dropped_evaluation": 3,
        "dropped_duplicates": 5,
    },
    "masked_lm": {
        "before": {"loss": 3.1, "perplexity": 22.2},
        "after": {"loss": 2.7, "perplexity": 14.9},
    },
    "head": "new (tied to the input embeddings)",
    "mlm_probability": 0.15,
    "whole_word_mask": False,
    "steps": 120,
    "train_runtime_s": 95.0,
    "a_key_the_report_does_not_know": {"nested": [1, 2]},
}


def write_adapt(folder: Path) -> Path:
    """An ``adapt`` stage folder as the stage writes it (model/ left out: the report does
    not read it)."""
    folder.mkdir(parents=True)
    (folder / "log_history.json").write_text("[]", encoding="utf-8")
    write_manifest(folder, {"stage": "adapt", "metrics": ADAPT_METRICS, "wall_time_s": 96.5})
    return folder


def plain_copy(teacher: Path, folder: Path, write_test_logits: Callable[[Path], None]) -> Path:
    """A ``plain-teacher`` folder: the teacher's folder copied, other test logits."""
    shutil.copytree(teacher, folder)
    (folder / "manifest.json").unlink()
    write_test_logits(folder / "logits" / "test.npz")
    manifest = read_manifest(teacher) or {}
    payload = {
        k: manifest[k] for k in ("task", "config", "metrics", "wall_time_s") if k in manifest
    }
    write_manifest(folder, {**payload, "stage": "plain-teacher"})
    return folder


def check_masked_lm(section: dict[str, Any]) -> None:
    adapt = section["adapt"]
    assert adapt["masked_lm"]["before"] == {"loss": 3.1, "perplexity": 22.2}
    assert adapt["masked_lm"]["after"] == {"loss": 2.7, "perplexity": 14.9}
    assert adapt["masked_lm"]["loss_change"] == pytest.approx(-0.4)
    assert adapt["masked_lm"]["perplexity_change"] == pytest.approx(-7.3)
    assert adapt["text"] == {k: v for k, v in ADAPT_METRICS["text"].items()}
    assert adapt["head"] == "new (tied to the input embeddings)"
    assert (adapt["steps"], adapt["mlm_probability"], adapt["wall_time_s"]) == (120, 0.15, 96.5)
    assert adapt["summary"] == (
        f"1234 texts (adapt.path: {TEXT_PATH}); 60 held out to measure the masked-LM loss; "
        "dropped: 3 that are validation or test text, 5 duplicates. Head: new (tied to the "
        "input embeddings); 15% of tokens masked; 120 steps in 95.0 s."
    )


def check_html(html: str) -> str:
    """The page is still one well-formed, escaped, self-contained page; returns its text."""
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == [] and checker.stack == [] and checker.external == []
    assert "b" not in checker.tags and "script" not in checker.tags
    assert "corpora/&lt;b&gt;domain&lt;/b&gt;|news.txt" in html
    assert 'id="adaptation"' in html and "<h2>Domain adaptation</h2>" in html
    return " ".join("".join(checker.text).split())


# --------------------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def adapted(upstream: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The classification report over the shared fake upstream plus an adapt folder and a
    plain twin whose test logits (about 70% right, stored shuffled) differ from the teacher's."""
    root = tmp_path_factory.mktemp("adapted")
    test = upstream["splits"]["test"]
    plain_logits = _noisy_logits(test.labels, 0.7, seed=21)
    order = np.random.default_rng(22).permutation(len(test))

    def write_logits(path: Path) -> None:
        save_logits(path, [test.ids[i] for i in order], plain_logits[order])

    folders = {
        **upstream["folders"],
        "adapt": write_adapt(root / "adapt"),
        "plain-teacher": plain_copy(
            upstream["folders"]["teacher"], root / "plain-teacher", write_logits
        ),
    }
    out = root / "report"
    returned = run_report({**upstream, "folders": folders}, out)
    document = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"out": out, "document": document, "returned": returned, "plain": plain_logits}


@pytest.fixture(scope="module")
def upstream(report_upstream: dict[str, Any]) -> dict[str, Any]:
    return report_upstream  # shared for the session (conftest.py): read only


def test_plain_teacher_row_is_scored_from_its_own_test_logits(
    upstream: dict[str, Any], adapted: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    teacher_logits, plain_logits = upstream["logits"]["teacher"], adapted["plain"]
    rows = adapted["document"]["rows"]
    assert [r["key"] for r in rows[:3]] == ["teacher", "teacher_plain", "student"]
    teacher, plain = rows[0], rows[1]
    assert plain["name"] == "Teacher (no adaptation)"
    accuracy = float(np.mean(plain_logits.argmax(-1) == labels))
    assert 0.5 < accuracy < 0.9 and accuracy != teacher["accuracy"]
    assert plain["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    expected = classification_metrics(plain_logits, labels, 2)
    assert plain["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    agreement = float(np.mean(plain_logits.argmax(-1) == teacher_logits.argmax(-1)))
    assert plain["agreement"] == pytest.approx(agreement, abs=1e-12)
    # the same architecture and size as the teacher, timed in the same run
    assert (plain["runtime"], plain["precision"]) == ("pytorch", "fp32")
    assert plain["parameters"] == teacher["parameters"] and plain["bytes"] == teacher["bytes"]
    assert plain["size_ratio"] == pytest.approx(1.0)
    assert plain["latency"]["p50_ms"] > 0
    # the adapted teacher stays the reference for the ratios
    assert teacher["accuracy_delta"] == 0.0
    assert plain["accuracy_delta"] == pytest.approx(accuracy - teacher["accuracy"])


def test_adaptation_section_has_the_adapt_figures_and_the_paired_test(
    upstream: dict[str, Any], adapted: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    teacher_logits, plain_logits = upstream["logits"]["teacher"], adapted["plain"]
    section = adapted["document"]["adaptation"]
    check_masked_lm(section)
    teacher_accuracy = float(np.mean(teacher_logits.argmax(-1) == labels))
    plain_accuracy = float(np.mean(plain_logits.argmax(-1) == labels))
    assert section["metric"] == "accuracy" and section["plain_teacher_trained"] is True
    assert section["teacher"] == pytest.approx(teacher_accuracy, abs=1e-12)
    assert section["plain_teacher"] == pytest.approx(plain_accuracy, abs=1e-12)
    assert section["gain"] == pytest.approx(teacher_accuracy - plain_accuracy, abs=1e-12)
    direct = paired_comparison(
        teacher_logits.argmax(-1) == labels, plain_logits.argmax(-1) == labels
    )
    significance = section["significance"]
    for key in ("p_value", "ci_low", "ci_high", "only_first_correct", "only_second_correct"):
        assert significance[key] == direct[key], key
    assert significance["examples"] == len(labels)
    verdict = section["verdict"]
    assert verdict == significance["verdict"]
    assert verdict.startswith(f"Adaptation gained {100 * section['gain']:+.1f} points over ")
    assert "the same teacher fine-tuned without it" in verdict and "McNemar exact p" in verdict
    wall = adapted["document"]["wall_time_s"]
    assert list(wall)[:4] == ["data", "adapt", "teacher", "plain-teacher"]
    assert wall["adapt"] == 96.5
    assert "plain-teacher" in adapted["document"]["training"]


def test_summary_metrics_keep_the_gain_and_the_test(adapted: dict[str, Any]) -> None:
    summary = adapted["returned"]["adaptation"]
    section = adapted["document"]["adaptation"]
    assert summary == {
        "metric": "accuracy",
        "gain": section["gain"],
        "p_value": section["significance"]["p_value"],
        "ci_low": section["significance"]["ci_low"],
        "ci_high": section["significance"]["ci_high"],
        "significant": section["significance"]["significant"],
        "perplexity_before": 22.2,
        "perplexity_after": 14.9,
    }
    plain_row = next(r for r in adapted["document"]["rows"] if r["key"] == "teacher_plain")
    assert adapted["returned"]["rows"]["teacher_plain"]["accuracy"] == plain_row["accuracy"]


def test_markdown_and_html_show_the_domain_adaptation_section(adapted: dict[str, Any]) -> None:
    section = adapted["document"]["adaptation"]
    markdown = (adapted["out"] / "report.md").read_text(encoding="utf-8")
    assert "\n## Domain adaptation\n" in markdown
    assert "was fine-tuned the same way (same seed and budget) without it." in markdown
    assert "| loss | 3.1 | 2.7 | -0.4000 |" in markdown
    assert "| perplexity | 22.2 | 14.9 | -7.3000 |" in markdown
    assert "corpora/&lt;b&gt;domain&lt;/b&gt;\\|news.txt" in markdown  # escaped for a table
    assert f"**{section['verdict']}**" in markdown
    assert "| Teacher (no adaptation) | pytorch fp32 |" in markdown
    p = section["significance"]["p_value"]
    assert f"| McNemar exact (two-sided binomial test on the discordant pairs): p | {p:.3g} |" in (
        markdown
    )
    html = (adapted["out"] / "report.html").read_text(encoding="utf-8")
    text = check_html(html)
    assert section["verdict"] in text
    assert "Teacher (no adaptation)" in text
    cells = '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>'
    assert "<td>loss</td>" + cells.format("3.1", "2.7", "-0.4000") in html
    assert "<td>perplexity</td>" + cells.format("22.2", "14.9", "-7.3000") in html
    assert 'id="adaptation-significance"' in html


def test_adapt_without_a_plain_twin_says_so(upstream: dict[str, Any], tmp_path: Path) -> None:
    folders = {**upstream["folders"], "adapt": write_adapt(tmp_path / "adapt")}
    returned = run_report({**upstream, "folders": folders}, tmp_path / "report")
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    section = document["adaptation"]
    check_masked_lm(section)
    assert section["plain_teacher_trained"] is False and section["verdict"] == NO_TWIN
    assert section["significance"] is None and section["gain"] is None
    assert "teacher_plain" not in {r["key"] for r in document["rows"]}
    assert returned["adaptation"]["gain"] is None
    assert returned["adaptation"]["perplexity_after"] == 14.9
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Domain adaptation" in markdown and "No plain twin was trained" in markdown
    assert "fine-tuned the same way" not in markdown
    check_html((tmp_path / "report" / "report.html").read_text(encoding="utf-8"))


def test_a_report_without_adaptation_has_neither_section_nor_row(unit_report: Path) -> None:
    document = json.loads((unit_report / "report.json").read_text(encoding="utf-8"))
    assert document.get("adaptation") is None
    assert "teacher_plain" not in {r["key"] for r in document["rows"]}
    assert "adapt" not in document["wall_time_s"] and "plain-teacher" not in document["training"]
    returned = json.loads((unit_report / "returned_metrics.json").read_text(encoding="utf-8"))
    assert returned["adaptation"] is None
    assert "Domain adaptation" not in (unit_report / "report.md").read_text(encoding="utf-8")
    assert 'id="adaptation"' not in (unit_report / "report.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- NER


def _word_starts(tokenizer: Any, words: list[str], max_length: int) -> list[int]:
    """Each word's first sub-token position, straight from the tokenizer."""
    word_ids = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    seen: list[int] = []
    starts = []
    for position, word in enumerate(word_ids.word_ids()):
        if word is not None and word not in seen:
            seen.append(word)
            starts.append(position)
    return starts


def _entities(tags: list[str]) -> int:
    return sum(tag.startswith("B-") for tag in tags)


@pytest.fixture(scope="module")
def ner(
    finished_project: Callable[[str], Project], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The NER report over the finished contract run plus an adapt folder and a plain twin
    that tags even test sentences perfectly and finds nothing in odd ones."""
    from transformers import AutoTokenizer

    from distill.tasks.token_classification.files import read_tag_names, read_tagged_split
    from distill.tasks.token_classification.logits import load_ragged, save_ragged
    from distill.tasks.token_classification.stages import report as report_stage

    project = finished_project("token-classification").root
    run = project / "runs" / NAME
    root = tmp_path_factory.mktemp("ner-adapted")
    names = read_tag_names(run / "data")
    test = read_tagged_split(run / "data", "test")
    max_length = int(read_manifest(run / "export")["config"]["data"]["max_length"])
    tokenizer = AutoTokenizer.from_pretrained(run / "teacher" / "model")
    teacher_logits = load_ragged(run / "teacher" / "logits" / "test.npz", test.ids)
    gold, teacher_tags, plain_tags, plain_logits = [], [], [], []
    for i, (words, tags, logits) in enumerate(
        zip(test.tokens, test.tags, teacher_logits, strict=True)
    ):
        starts = _word_starts(tokenizer, words, max_length)
        gold.append([names[t] for t in tags[: len(starts)]])
        teacher_tags.append([names[int(logits[p].argmax())] for p in starts])
        values = np.zeros_like(logits)
        values[:, names.index("O")] = 5.0
        if i % 2 == 0:
            for position, tag in zip(starts, tags, strict=False):
                values[position] = 0.0
                values[position, tag] = 5.0
        plain_logits.append(values)
        plain_tags.append(gold[-1] if i % 2 == 0 else ["O"] * len(starts))

    def write_logits(path: Path) -> None:
        save_ragged(path, test.ids[::-1], plain_logits[::-1])  # stored in another order

    inputs = {name: run / name for name in ("data", "teacher", "student", "export")}
    inputs["adapt"] = write_adapt(root / "adapt")
    inputs["plain-teacher"] = plain_copy(run / "teacher", root / "plain-teacher", write_logits)
    ctx = RunContext(
        name=NAME, seed=13, task="token-classification", workdir=project, recipe_dir=project
    )
    out = root / "report"
    out.mkdir()
    config = ReportConfig(latency_runs=3, latency_warmup=1, latency_threads=1)
    returned = report_stage.run(ctx, inputs, out, report=config)
    return {
        "out": out,
        "document": json.loads((out / "report.json").read_text(encoding="utf-8")),
        "returned": returned,
        "gold": gold,
        "teacher_tags": teacher_tags,
        "plain_tags": plain_tags,
        "teacher_manifest": read_manifest(run / "teacher"),
    }


def test_ner_plain_teacher_row_and_adaptation_section(ner: dict[str, Any]) -> None:
    from distill.tasks.token_classification.metrics import entity_counts

    gold, plain_tags = ner["gold"], ner["plain_tags"]
    found = sum(_entities(g) for i, g in enumerate(gold) if i % 2 == 0)
    total = sum(_entities(g) for g in gold)
    f1 = 2 * found / (found + total)  # every entity found is right: precision 1
    assert 0 < found < total
    rows = ner["document"]["rows"]
    assert [r["key"] for r in rows[:3]] == ["teacher", "teacher_plain", "student"]
    teacher, plain = rows[0], rows[1]
    assert plain["name"] == "Teacher (no adaptation)"
    assert plain["entity_f1"] == pytest.approx(f1, abs=1e-12)
    assert plain["entity_precision"] == 1.0
    assert plain["entity_recall"] == pytest.approx(found / total, abs=1e-12)
    assert plain["bytes"] == teacher["bytes"] and plain["parameters"] == teacher["parameters"]
    assert plain["latency"]["p50_ms"] > 0 and plain["f1_kept"] == pytest.approx(
        f1 / teacher["entity_f1"]
    )
    section = ner["document"]["adaptation"]
    check_masked_lm(section)
    assert section["metric"] == "entity_f1"
    assert section["plain_teacher"] == pytest.approx(f1, abs=1e-12)
    # the adapted teacher's F1 here is the one its own stage recorded
    recorded = ner["teacher_manifest"]["metrics"]["test"]["entity_f1"]
    assert section["teacher"] == pytest.approx(recorded, abs=1e-12)
    assert section["gain"] == pytest.approx(recorded - f1, abs=1e-12)
    direct = paired_f1_comparison(
        entity_counts(gold, ner["teacher_tags"]), entity_counts(gold, plain_tags)
    )
    significance = section["significance"]
    for key in ("p_value", "ci_low", "ci_high", "f1_first", "f1_second", "examples"):
        assert significance[key] == pytest.approx(direct[key], abs=1e-12), key
    verdict = section["verdict"]
    assert verdict.startswith("Adaptation ") and "the same teacher fine-tuned without it" in verdict
    assert "points of entity micro-F1" in verdict and "approximate randomization p" in verdict
    assert ner["returned"]["adaptation"]["p_value"] == significance["p_value"]
    assert ner["returned"]["adaptation"]["gain"] == section["gain"]
    assert ner["returned"]["rows"]["teacher_plain"]["entity_f1"] == plain["entity_f1"]


def test_ner_markdown_and_html_show_the_domain_adaptation_section(ner: dict[str, Any]) -> None:
    section = ner["document"]["adaptation"]
    markdown = (ner["out"] / "report.md").read_text(encoding="utf-8")
    assert "## Domain adaptation" in markdown and f"**{section['verdict']}**" in markdown
    assert "| loss | 3.1 | 2.7 | -0.4000 |" in markdown
    assert "| perplexity | 22.2 | 14.9 | -7.3000 |" in markdown
    assert "corpora/&lt;b&gt;domain&lt;/b&gt;\\|news.txt" in markdown
    gain = f"{100 * section['gain']:+.2f} pt"
    assert f"| {100 * section['plain_teacher']:.2f}% | {gain} |" in markdown
    assert "| Teacher (no adaptation) |" in markdown
    text = check_html((ner["out"] / "report.html").read_text(encoding="utf-8"))
    assert section["verdict"] in text and "Teacher (no adaptation)" in text


def test_ner_report_without_adaptation_is_as_before(
    finished_project: Callable[[str], Project],
) -> None:
    root = finished_project("token-classification").root
    folder = root / "reports" / NAME
    document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert document.get("adaptation") is None
    assert "teacher_plain" not in {r["key"] for r in document["rows"]}
    assert read_manifest(root / "runs" / NAME / "report")["metrics"]["adaptation"] is None
    assert "Domain adaptation" not in (folder / "report.md").read_text(encoding="utf-8")
    assert 'id="adaptation"' not in (folder / "report.html").read_text(encoding="utf-8")
