"""The bad rows of one data source, collected and raised as one :class:`DataError` listing
them all (the first :data:`MAX_PROBLEMS`, then a count): a user fixes a file in one pass."""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.errors import DataError

MAX_PROBLEMS = 20


@dataclass
class Problems:
    """``name`` is the source (a file, a hub dataset), ``key`` the recipe key that named it,
    ``noun`` what the message counts ("problem", "bad row")."""

    name: str
    key: str
    noun: str = "problem"
    found: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.found.append(f"{where}: {message}")

    def raise_any(self) -> None:
        if not self.found:
            return
        listed = [f"  - {p}" for p in self.found[:MAX_PROBLEMS]]
        if len(self.found) > MAX_PROBLEMS:
            listed.append(f"  - ... and {len(self.found) - MAX_PROBLEMS} more")
        raise DataError(
            f"{self.name} ({self.key}): {len(self.found)} {self.noun}(s):\n" + "\n".join(listed)
        )
