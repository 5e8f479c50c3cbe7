"""One tiny project per registered task, for the task contract (tests/test_task_contract.py).

A new task is registered in distill/tasks/__init__.py and gets one builder here: a tiny
model built from a config, a few rows of local data, a recipe, and the arguments its bundle
runner answers (`distill <task.command> BUNDLE ...`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conftest import SHORT_EXPORT_TIMING, build_tiny_classifier, synthetic_rows, write_csv
from generation_helpers import WORDS, tiny_llama, tiny_tokenizer

NAME = "contract"
LATENCY = "[report]\nlatency_runs = 3\nlatency_warmup = 1\n"


@dataclass(frozen=True)
class Project:
    root: Path
    runner_args: list[str]  # after `distill <command> BUNDLE`
    env: dict[str, str] = field(default_factory=dict)  # of its `distill run`


# Tiny seq2seq runs on one torch thread: a second only waits on these models (3x slower on a
# busy 2-core machine), and their seed's outcome then does not depend on the core count.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def classification(root: Path) -> Project:
    """A 2-layer BERT teacher, a 1-layer student and a static-embedding variant beside it,
    bundles without their fp32 reference (also what tests/test_static_pipeline.py reads)."""
    build_tiny_classifier(root / "teacher-base", layers=2)
    write_csv(root / "data.csv", ["text", "label"], synthetic_rows(120))
    (root / "recipe.toml").write_text(
        f"""name = "{NAME}"
[data]
path = "data.csv"
max_length = 16
[teacher]
model = "teacher-base"
epochs = 2
min_steps = 0
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 1
epochs = 2
min_steps = 0
learning_rate = 3e-3
batch_size = 16
[student.variants.fast]
init = "static"
static_dim = 8
static_pooling = "weighted"
static_hidden = 0
learning_rate = 1e-2
epochs = 4
[export]
max_accuracy_drop = 1.0
fp32_reference = false
{SHORT_EXPORT_TIMING}{LATENCY}""",
        encoding="utf-8",
    )
    return Project(root, ["good fun", "--json"])


SUBJECTS = ["the cat", "the dog", "a bird", "the king", "the queen", "a fish"]
VERBS = ["run", "walk", "swim", "fly", "see", "eat", "sleep"]
DESTINATIONS = ["up the tree", "in the river", "to the city", "in the house", "to paris"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Text with structure a tiny LM can learn (subject verb place), from the tiny vocabulary."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        extra = rng.choice(["", " and " + rng.choice(VERBS), " " + rng.choice(WORDS[40:60])])
        rows.append(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(DESTINATIONS)}{extra} w{i % 40}"
        )
    return rows


def causal_lm(root: Path) -> Project:
    """A 4-layer Llama teacher on learnable text, a 2-layer student cut from it, weight-only
    int8 (also what tests/test_generation_pipeline.py reads)."""
    teacher = root / "teacher-base"
    tiny_llama(seed=1, layers=4).save_pretrained(teacher)
    tiny_tokenizer().save_pretrained(teacher)
    write_csv(root / "text.csv", ["text"], ([s] for s in sentences(160)))
    (root / "recipe.toml").write_text(
        f"""name = "{NAME}"
seed = 3
task = "causal-lm"
[data]
path = "text.csv"
max_length = 24
[teacher]
model = "teacher-base"
epochs = 4
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 2
epochs = 4
learning_rate = 3e-3
batch_size = 16
alpha = 0.8
temperature = 1.0
top_k = 8
[export]
quantization = "weight-only"
parity_tolerance = 1e-3
max_perplexity_increase = 1.0
{LATENCY}samples = 2
max_new_tokens = 4
""",
        encoding="utf-8",
    )
    return Project(root, ["the cat", "--max-new-tokens", "3"])


PEOPLE = ["alice", "bob", "carol", "dave"]
PLACES = ["paris", "london", "rome", "oslo"]


def ner_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Sentences whose tags follow from the words: people are B-person, places B-geo-loc
    (two-word places "new york" give I- tags too)."""
    import random

    rng = random.Random(seed)
    sentences = []
    for i in range(n):
        words = [(w, "O") for w in rng.sample(["the", "a", "flight", "today", "is", "my"], 3)]
        words.insert(rng.randrange(4), (rng.choice(PEOPLE), "B-person"))
        if i % 3 == 0:
            words += [("new", "B-geo-loc"), ("york", "I-geo-loc")]
        else:
            words.append((rng.choice(PLACES), "B-geo-loc"))
        sentences.append(words)
    return sentences


def token_classification(root: Path) -> Project:
    build_tiny_classifier(
        root / "teacher-base", layers=2, extra_words=PEOPLE + PLACES + ["new", "york"]
    )
    lines = []
    for sentence in ner_sentences(120):
        lines += [f"{word}\t{tag}" for word, tag in sentence] + ["\t"]
    (root / "ner.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "recipe.toml").write_text(
        f"""name = "{NAME}"
task = "token-classification"
[data]
path = "ner.txt"
max_length = 16
[teacher]
model = "teacher-base"
epochs = 3
min_steps = 0
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 1
epochs = 3
min_steps = 0
learning_rate = 3e-3
batch_size = 16
trim_vocabulary = true
hidden_weight = 1.0
[export]
max_f1_drop = 1.0
{SHORT_EXPORT_TIMING}{LATENCY}""",
        encoding="utf-8",
    )
    return Project(root, ["alice flew to paris today", "--json"])


QA_WORDS = ["lives", "in", "where", "does", "live", "who", "and", "?", "."]


def qa_articles(n: int, seed: int = 0) -> list[dict]:
    """A SQuAD v1.1 document's articles: each context names one person and one place among
    filler words, in random order; its two questions ask where the person lives (answer:
    the place) and who lives in the place (answer: the person)."""
    import random

    rng = random.Random(seed)
    filler = ["the", "a", "flight", "today", "is", "my", "and", "in", "lives"]
    articles = []
    for i in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        words = rng.sample(filler, 5)
        words.insert(rng.randrange(len(words) + 1), person)
        words.insert(rng.randrange(len(words) + 1), place)
        context = " ".join(words) + " ."
        qas = []
        for k, (question, answer) in enumerate(
            [(f"where does {person} live ?", place), (f"who lives in {place} ?", person)]
        ):
            start = len(" ".join(words[: words.index(answer)])) + (words.index(answer) > 0)
            qas.append(
                {
                    "id": f"q{i}.{k}",
                    "question": question,
                    "answers": [{"text": answer, "answer_start": start}],
                }
            )
        articles.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": qas}]})
    return articles


def question_answering(root: Path) -> Project:
    """A 2-layer BERT teacher and a 1-layer student built from a config, on a generated SQuAD
    v1.1 document (also what tests/test_qa_pipeline.py reads). Whether a person or a place
    answers depends on the question: a model first learns to pick either (F1 near 50%), and
    only later the question's cue; the teacher gets the steps to learn it, the students
    fewer, where the teacher's soft targets make the difference."""
    import json

    build_tiny_classifier(root / "teacher-base", layers=2, extra_words=PEOPLE + PLACES + QA_WORDS)
    document = {"version": "1.1", "data": qa_articles(300)}
    (root / "squad.json").write_text(json.dumps(document), encoding="utf-8")
    (root / "recipe.toml").write_text(
        f"""name = "{NAME}"
task = "question-answering"
[data]
path = "squad.json"
max_length = 24
doc_stride = 4
max_question_length = 8
max_answer_length = 4
[teacher]
model = "teacher-base"
epochs = 25
min_steps = 0
early_stopping_patience = 100
learning_rate = 3e-3
batch_size = 16
[student]
init = "config"
num_layers = 1
epochs = 10
min_steps = 0
early_stopping_patience = 100
learning_rate = 3e-3
batch_size = 16
alpha = 0.9
temperature = 2.0
[export]
max_answer_f1_drop = 1.0
{SHORT_EXPORT_TIMING}{LATENCY}""",
        encoding="utf-8",
    )
    return Project(
        root, ["where does alice live ?", "--context", "alice lives in rome .", "--json"]
    )


def seq2seq_recipe(
    teacher: dict[str, object], student: dict[str, object], labelled: int = 150
) -> str:
    """A seq2seq recipe on pairs.csv: ``labelled`` pairs (split into train, validation and
    test), the other sources transfer text the teacher translates; a student built from a config (random weights: one cut
    from a teacher that already translates perfectly has nothing left to learn), with its
    no-KD and sequence-level twins."""

    def keys(values: dict[str, object]) -> str:
        return "".join(f"{key} = {value}\n" for key, value in values.items())

    return f"""name = "{NAME}"
task = "seq2seq"
[data]
path = "pairs.csv"
max_examples = {labelled}
max_length = 12
max_target_length = 12
[teacher]
model = "teacher-base"
batch_size = 16
{keys(teacher)}[student]
init = "config"
num_layers = 1
batch_size = 16
alpha = 0.8
temperature = 2.0
kd_top_k = 8
sequence_beams = 2
{keys(student)}[student.transfer]
path = "unused"
[export]
max_bleu_drop = 100.0
parity_tolerance = 1e-3
{LATENCY}examples = 3
"""


def seq2seq(root: Path) -> Project:
    """A 2-layer BART teacher on a toy word-for-word translation, a 1-layer student built
    from a config (also what tests/test_s2s_pipeline.py reads)."""
    from seq2seq_models import WORDS as S2S_WORDS
    from seq2seq_models import build_tiny_bart, toy_pairs

    build_tiny_bart(root / "teacher-base", S2S_WORDS, layers=2, seed=0)
    write_csv(root / "pairs.csv", ["source", "target"], toy_pairs(400, seed=0))
    steps = {"learning_rate": 1e-2}
    (root / "recipe.toml").write_text(
        seq2seq_recipe(
            {"max_steps": 300, "eval_steps": 300, **steps},
            {"max_steps": 250, "eval_steps": 250, **steps},
        ),
        encoding="utf-8",
    )
    return Project(root, ["red cat dog sun", "--max-new-tokens", "8"], ONE_THREAD)


PROJECTS: dict[str, Callable[[Path], Project]] = {
    "sequence-classification": classification,
    "causal-lm": causal_lm,
    "token-classification": token_classification,
    "question-answering": question_answering,
    "seq2seq": seq2seq,
}
