"""How messages and descriptions list things: ``a``, ``a and b``, ``a, b and c``.

Standard library only: the torch-free bundle reader and the recipe both use it."""

from __future__ import annotations

from collections.abc import Sequence


def listed(names: Sequence[str], conjunction: str = "and") -> str:
    """``names`` as a sentence lists them, the last two joined by ``conjunction``."""
    names = list(names)
    if len(names) > 2:
        names = [", ".join(names[:-1]), names[-1]]
    return f" {conjunction} ".join(names)
