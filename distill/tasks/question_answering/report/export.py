"""The question-answering report's Export section: the int8 candidates the export stage
weighed (fp32 first, as their reference), the gate, and why it deployed what it did."""

from __future__ import annotations

from typing import Any


def export_section(export: dict[str, Any]) -> dict[str, Any] | None:
    """The candidates, the gate and the reason for the choice; None for an export that
    recorded no candidates."""
    if "candidates" not in export:
        return None
    fp32 = (export.get("student") or {}).get("fp32") or {}
    return {
        "gate": export.get("gate"),
        "deployed": export.get("deployed"),
        "chosen": export.get("chosen"),
        "reason": export.get("chosen_reason"),
        "fp32": {
            "exact_match": fp32.get("exact_match"),
            "f1": fp32.get("f1"),
            "bytes": fp32.get("bytes"),
            "p50_ms": (fp32.get("latency_b1") or {}).get("p50_ms"),
        },
        "candidates": [candidate_row(r, export.get("chosen")) for r in export["candidates"]],
    }


def candidate_row(record: dict[str, Any], chosen: str | None) -> dict[str, Any]:
    """One candidate as the report shows it (every column present, None when not measured)."""
    keys = ("name", "description", "exact_match", "f1", "f1_drop", "agreement_with_fp32")
    return {
        **{k: record.get(k) for k in keys},
        "bytes": record.get("bytes"),
        "p50_ms": (record.get("latency_b1") or {}).get("p50_ms"),
        "speedup_vs_fp32": record.get("speedup_vs_fp32"),
        "qualifies": record.get("qualifies", False),
        "error": record.get("error"),
        "deployed": record.get("name") == chosen,
    }
