"""Counting what was dropped or skipped, with the first few names of each kind for the summary."""

from __future__ import annotations

from typing import Iterable

#: How many file names each reason keeps for the summary.
EXAMPLES = 5


class Tally:
    """Counts per reason (in first-seen order) and the first ``EXAMPLES`` names of each."""

    def __init__(self, data: dict | None = None):
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        for reason, entry in (data or {}).items():
            self.counts[reason] = int(entry["count"])
            self.examples[reason] = [str(name) for name in entry["examples"]]

    def add(self, reason: str, names: Iterable[str]) -> int:
        """Count ``names`` under ``reason``; returns how many were added (0 adds nothing)."""
        names = list(names)
        if names:
            self.counts[reason] = self.counts.get(reason, 0) + len(names)
            kept = self.examples.setdefault(reason, [])
            kept.extend(str(name) for name in names[: EXAMPLES - len(kept)])
        return len(names)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        """JSON-ready ``{reason: {"count": n, "examples": [...]}}``."""
        return {
            reason: {"count": count, "examples": list(self.examples[reason])}
            for reason, count in self.counts.items()
        }

    def format(self, indent: str = "  ") -> str:
        if not self.counts:
            return f"{indent}none"
        width = max(len(reason) for reason in self.counts)
        lines = []
        for reason, count in self.counts.items():
            names = ", ".join(self.examples[reason])
            more = ", ..." if count > len(self.examples[reason]) else ""
            lines.append(f"{indent}{reason:<{width}}  {count:>8,}")
            lines.append(f"{indent}    e.g. {names}{more}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Tally({self.counts})"
