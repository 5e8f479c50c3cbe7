"""The report's floor: TF-IDF (word 1-2 grams) + logistic regression fitted on the
training split, its row in the table, and which transformer rows do not beat it."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from distill.tasks.classification.files import Split
from distill.tasks.classification.report.inputs import ReportInputs

PRIMARY_METRIC = "accuracy"
_TFIDF_C_GRID = (0.25, 1.0, 4.0, 16.0)


def tfidf_baseline(
    train: Split, validation: Split, test: Split, num_labels: int, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Fit TF-IDF (word 1-2 grams) + logistic regression on train; C picked on validation.

    Returns test "logits" (log-probabilities, one column per label) and details, or None
    when the training split has fewer than two classes.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if len(np.unique(train.labels)) < 2:
        return None

    def fit(c: float) -> Pipeline:
        pipeline = Pipeline(
            [
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
                ("logreg", LogisticRegression(C=c, max_iter=2000, random_state=seed)),
            ]
        )
        return pipeline.fit(train.texts, train.labels)

    scores: dict[float, float] = {}
    best: Any = None
    if len(validation) and len(_TFIDF_C_GRID) > 1:
        for c in _TFIDF_C_GRID:
            candidate = fit(c)
            scores[c] = float((candidate.predict(validation.texts) == validation.labels).mean())
            if best is None or scores[c] > scores[best[0]]:
                best = (c, candidate)
        chosen_c, pipeline = best
    else:
        chosen_c, pipeline = 1.0, fit(1.0)

    probabilities = pipeline.predict_proba(test.texts)
    logits = np.full((len(test), num_labels), -1e9, dtype=np.float64)  # classes unseen in train
    classes = pipeline.named_steps["logreg"].classes_
    logits[:, classes] = np.log(np.clip(probabilities, 1e-12, None))
    logreg = pipeline.named_steps["logreg"]
    return logits, {
        "parameters": int(logreg.coef_.size + logreg.intercept_.size),
        "bytes": len(pickle.dumps(pipeline)),
        "vocabulary_size": len(pipeline.named_steps["tfidf"].vocabulary_),
        "ngram_range": [1, 2],
        "C": chosen_c,
        "validation_accuracy_by_C": {str(c): s for c, s in scores.items()},
    }


def tfidf_row(inputs: ReportInputs, seed: int) -> dict[str, Any] | None:
    """The TF-IDF + logistic-regression floor's row; None when it cannot be fitted."""
    splits = inputs.splits
    tfidf = tfidf_baseline(
        splits["train"], splits["validation"], splits["test"], len(inputs.label_names), seed=seed
    )
    if tfidf is None:
        return None
    tfidf_logits, tfidf_info = tfidf
    return {
        "key": "tfidf",
        "name": "TF-IDF + logistic regression",
        "kind": "baseline",
        "runtime": "scikit-learn",
        "precision": "fp64",
        "deployed": False,
        "parameters": tfidf_info.pop("parameters"),
        "bytes": tfidf_info.pop("bytes"),
        "bytes_note": "pickled pipeline size (not written to disk)",
        "weight_files": [],
        **inputs.score(tfidf_logits),
        "latency": None,
        "details": tfidf_info,
    }


def baseline_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mark each transformer row that does not beat the TF-IDF floor (strictly) on accuracy."""
    floor = next((r for r in rows if r["key"] == "tfidf"), None)
    if floor is None:
        for row in rows:
            row["beats_baseline"] = None
        return None
    below = []
    for row in rows:
        if row["kind"] != "transformer":
            row["beats_baseline"] = None
            continue
        row["beats_baseline"] = bool(row[PRIMARY_METRIC] > floor[PRIMARY_METRIC])
        if not row["beats_baseline"]:
            below.append(row["key"])
    return {
        "key": "tfidf",
        "metric": PRIMARY_METRIC,
        "accuracy": floor["accuracy"],
        "macro_f1": floor["macro_f1"],
        "below_baseline": below,
    }
