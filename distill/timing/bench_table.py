"""``distill bench``'s results read out: the speed-up and size ratios, and the Markdown
tables it prints (:mod:`distill.timing.bench` measures; this module only reads its result dict)."""

from __future__ import annotations

from typing import Any

# Model keys, in table order.
TEACHER = "teacher_pytorch"
STUDENT = "student_pytorch"
ONNX_FP32 = "student_onnx_fp32"
ONNX_FP32_OPTIMIZED = "student_onnx_fp32_optimized"
DEPLOYED = "deployed"


def _p50(cell: dict[str, Any], key: str) -> float | None:
    stats = cell["latency"].get(key)
    return None if stats is None else stats["p50_ms"]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def compute_ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups (p50 quotients) per cell and the headline ratios at ``max_length``."""
    deployed_is_int8 = result.get("deployed_precision") == "int8"
    per_cell = []
    for cell in result["cells"]:
        per_cell.append(
            {
                "batch_size": cell["batch_size"],
                "sequence_length": cell["sequence_length"],
                "int8_vs_fp32_onnx": _ratio(_p50(cell, ONNX_FP32), _p50(cell, DEPLOYED))
                if deployed_is_int8
                else None,
                "int8_vs_fp32_onnx_optimized": _ratio(
                    _p50(cell, ONNX_FP32_OPTIMIZED), _p50(cell, DEPLOYED)
                )
                if deployed_is_int8
                else None,
                "deployed_vs_teacher": _ratio(_p50(cell, TEACHER), _p50(cell, DEPLOYED)),
                "deployed_vs_student_pytorch": _ratio(_p50(cell, STUDENT), _p50(cell, DEPLOYED)),
            }
        )
    sizes = {m["key"]: m["bytes"] for m in result["models"]}
    # the headline ratios are taken at max_length (else at the longest length measured)
    measured = {row["sequence_length"] for row in per_cell}
    max_length = result["typical_lengths"]["max_length"]
    if max_length not in measured and measured:
        max_length = max(measured)

    def at(batch: int, field: str) -> float | None:
        for row in per_cell:
            if row["batch_size"] == batch and row["sequence_length"] == max_length:
                return row[field]
        return None

    return {
        "per_cell": per_cell,
        "int8_vs_fp32_onnx_b1": at(1, "int8_vs_fp32_onnx"),
        "int8_vs_fp32_onnx_b32": at(32, "int8_vs_fp32_onnx"),
        "deployed_vs_teacher_b1": at(1, "deployed_vs_teacher"),
        "size_deployed_vs_fp32_onnx": _ratio(sizes.get(DEPLOYED), sizes.get(ONNX_FP32)),
        "at_sequence_length": max_length,
    }


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def render_markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown: one latency table, one ratio table, the headline ratios."""
    cells = result["cells"]
    hw = result["hardware"]
    typical = result["typical_lengths"]
    load = result.get("load_average") or {}
    lines = [
        f"## Latency: `{result['run']}`",
        "",
        f"{result['threads']} thread(s) per model (torch.set_num_threads / ORT intra-op), "
        f"CPU: {hw.get('cpu')} ({hw.get('available_cores')} cores available); "
        f"{result['runs']} timed calls per cell after {result['warmup']} warm-up calls "
        f"(excluded), models interleaved over {result['rounds']} rounds. Inputs padded to the "
        f"sequence length; typical test lengths: median {typical.get('median', 'n/a')}, "
        f"p95 {typical.get('p95', 'n/a')}, max_length {typical['max_length']} tokens. "
        f"1-minute load average before / after: {_fmt(load.get('before'))} / "
        f"{_fmt(load.get('after'))} (a load above the thread count means other processes "
        "competed for the cores; PyTorch's OpenMP threads suffer most).",
        "",
    ]
    header = ["model", "runtime", "size MB"] + [
        f"b{c['batch_size']} s{c['sequence_length']} p50 / p95 ms" for c in cells
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + " |")
    for model in result["models"]:
        row = [model["label"], model["runtime"], f"{model['bytes'] / 1e6:.2f}"]
        for cell in cells:
            stats = cell["latency"][model["key"]]
            row.append(f"{stats['p50_ms']:.2f} / {stats['p95_ms']:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    ratios = result["ratios"]
    lines += ["", "Speed-ups (quotients of p50s; > 1 means the deployed model is faster):", ""]
    header = ["ratio"] + [f"b{c['batch_size']} s{c['sequence_length']}" for c in cells]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for field, label in (
        ("int8_vs_fp32_onnx", "int8 vs fp32 ONNX (plain export)"),
        ("int8_vs_fp32_onnx_optimized", "int8 vs fp32 ONNX (ORT optimized)"),
        ("deployed_vs_student_pytorch", "deployed vs student PyTorch fp32"),
        ("deployed_vs_teacher", "deployed vs teacher PyTorch fp32"),
    ):
        row = [label] + [_fmt(r[field], ".2f", "x") for r in ratios["per_cell"]]
        lines.append("| " + " | ".join(row) + " |")
    length = ratios["at_sequence_length"]
    lines += [
        "",
        f"- int8 vs fp32 ONNX (plain export), batch 1, seq {length}: "
        f"{_fmt(ratios['int8_vs_fp32_onnx_b1'], '.2f', 'x')}",
        f"- int8 vs fp32 ONNX (plain export), batch 32, seq {length}: "
        f"{_fmt(ratios['int8_vs_fp32_onnx_b32'], '.2f', 'x')}",
        f"- deployed vs teacher (PyTorch fp32), batch 1, seq {length}: "
        f"{_fmt(ratios['deployed_vs_teacher_b1'], '.2f', 'x')}",
        f"- size, deployed / fp32 ONNX: {_fmt(ratios['size_deployed_vs_fp32_onnx'], '.3f', 'x')}",
        "",
    ]
    return "\n".join(lines)
