"""Typed, user-facing errors.

Every subclass of :class:`DistillError` is a problem with the user's input or
environment; the CLI prints its message in one piece (no traceback) and exits 2.
"""

from __future__ import annotations


class DistillError(Exception):
    """A problem the user can fix; its message names the recipe key, file, row or column."""

    exit_code = 2


class RecipeError(DistillError):
    """The recipe is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str = "recipe") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


class UnreadableRecipeError(RecipeError):
    """The recipe file cannot be read as TOML at all: one line naming the file and why."""

    def __init__(self, path: str, why: str) -> None:
        self.problems = [why]
        self.source = path
        DistillError.__init__(self, f"{path}: {why}")


class DataError(DistillError):
    """The data set cannot be used as given."""


class ModelLoadError(DistillError):
    """A model or tokenizer cannot be found or is refused."""


class ParityError(DistillError):
    """The ONNX model's outputs differ from PyTorch's beyond the tolerance."""

    def __init__(self, model_path: str, differences: dict[str, float], tolerance: float) -> None:
        self.differences = differences
        self.tolerance = tolerance
        listed = ", ".join(f"{name}: max |diff| {d:.3g}" for name, d in differences.items())
        super().__init__(
            f"{model_path}: ONNX Runtime outputs differ from PyTorch beyond "
            f"tolerance {tolerance:g} ({listed}); the model was not published"
        )


class AccuracyDropError(DistillError):
    """The quantized model lost more accuracy than the recipe allows."""


class ArtifactError(DistillError):
    """An artifact on disk is missing, incomplete or fails its checksum."""


class LabelParityError(ParityError):
    """The labels stage's ONNX Runtime logits differ from PyTorch's beyond the tolerance."""

    def __init__(self, max_diff: float, tolerance: float, *, examples: int, worst_id: str) -> None:
        self.differences = {"logits": max_diff}
        self.tolerance = tolerance
        self.max_diff = max_diff
        DistillError.__init__(
            self,
            f"labels: ONNX Runtime logits differ from PyTorch by max |diff| {max_diff:.3g} "
            f"(example {worst_id!r}, {examples} sampled) beyond labels.parity_tolerance = "
            f"{tolerance:g}; nothing was cached. Set labels.backend = 'pytorch' or raise "
            "labels.parity_tolerance",
        )
