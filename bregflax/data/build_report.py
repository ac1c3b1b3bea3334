"""Honest accounting for dataset builds: what was kept, what was not, and why.

Three kinds of skipped input, each counted by reason with the first few locations:

* ``bad_input``: malformed or unusable input (a bad CSV row, a corrupt image, a label out
  of range). With ``strict=True`` the first one raises :class:`BadRecordError`.
* ``excluded``: well-formed input that the task leaves out by definition (AffectNet code 8
  "None" in a categorical task, a frame without a detected face). Never raises.
* ``notes``: oddities that drop nothing (annotation lines past a video's last frame).

An empty split raises :class:`EmptySplitError`; a split the source does not have at all is
listed in ``absent_splits``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bregflax import hostile, safe_io

MAX_EXAMPLES = 5
FILENAME = "build_report.json"


class BadRecordError(ValueError):
    """A bad input record in strict mode; the message starts with its file and line."""


class EmptySplitError(ValueError):
    """A split has no usable records (or a requested split is absent from the source)."""


@dataclasses.dataclass
class Tally:
    """Counts per reason, with the first few locations of each."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(where)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            r: {"count": self.counts[r], "examples": self.examples[r]} for r in sorted(self.counts)
        }


@dataclasses.dataclass
class BuildReport:
    """What one dataset build kept and skipped, per split and per reason."""

    dataset: str
    config: dict[str, Any]
    num_classes: int = 0
    strict: bool = False
    source_format: str = ""
    kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    label_counts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    bad_input: Tally = dataclasses.field(default_factory=Tally)
    excluded: Tally = dataclasses.field(default_factory=Tally)
    notes: Tally = dataclasses.field(default_factory=Tally)
    absent_splits: list[str] = dataclasses.field(default_factory=list)

    def bad(self, reason: str, where: str, detail: str = "") -> None:
        """Counts bad input at ``where`` (``file:line``); raises at once if strict."""
        if self.strict:
            raise BadRecordError(f"{where}: {reason}" + (f" ({detail})" if detail else ""))
        self.bad_input.add(reason, f"{where}: {detail}" if detail else where)

    def exclude(self, reason: str, where: str) -> None:
        self.excluded.add(reason, where)

    def note(self, reason: str, where: str) -> None:
        self.notes.add(reason, where)

    def keep(self, split: str, label: int) -> None:
        self.kept[split] += 1
        counts = self.label_counts.setdefault(split, np.zeros(self.num_classes, np.int64))
        if 0 <= label < self.num_classes:
            counts[label] += 1

    def track(self, split: str, examples: Iterable[dict[str, Any]]) -> Iterator[tuple[int, dict]]:
        """Keys and counts the kept examples of ``split``; raises if none are left."""
        index = 0
        for index, example in enumerate(examples, 1):
            self.keep(split, int(example["label"]))
            yield index - 1, example
        if index == 0:
            raise EmptySplitError(
                f"{self.dataset}: split {split!r} has no usable records.\n{self.summary()}"
            )

    def class_counts(self, split: str = "train") -> list[int]:
        return [int(c) for c in self.label_counts.get(split, np.zeros(self.num_classes))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "config": self.config,
            "source_format": self.source_format,
            "strict": self.strict,
            "kept": dict(sorted(self.kept.items())),
            "absent_splits": sorted(self.absent_splits),
            "label_counts": {s: self.class_counts(s) for s in sorted(self.label_counts)},
            "bad_input": self.bad_input.to_dict(),
            "excluded": self.excluded.to_dict(),
            "notes": self.notes.to_dict(),
        }

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        safe_io.write_atomic(path, hostile.strict_json(self.to_dict(), indent=2) + "\n")
        return path

    def summary(self) -> str:
        return summarize(self.to_dict())


def summarize(report: dict[str, Any]) -> str:
    """A few human lines from a report dict: kept per split, skipped per reason."""
    lines = [f"{report['dataset']} ({report.get('source_format') or 'unknown format'}):"]
    kept = ", ".join(f"{s} {n:,}" for s, n in report["kept"].items()) or "nothing"
    lines.append(f"  kept: {kept}")
    if report["absent_splits"]:
        lines.append(f"  absent from the source: {', '.join(report['absent_splits'])}")
    for title, key in (("bad input", "bad_input"), ("excluded", "excluded"), ("notes", "notes")):
        for reason, entry in report[key].items():
            first = "; ".join(entry["examples"][:3])
            lines.append(f"  {title}: {reason}: {entry['count']:,} (first: {first})")
    return "\n".join(lines)


def read(directory: str | Path) -> dict[str, Any] | None:
    """The report written next to prepared data, or None."""
    path = Path(directory) / FILENAME
    return json.loads(path.read_text()) if path.exists() else None
