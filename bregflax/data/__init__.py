"""One way in to every dataset: ``load(name, split, config)``.

A *source* is random-access (``len`` and ``__getitem__``) and yields records::

    {"image": uint8 (H, W, C), "label": int32 (-1 if absent),
     "valence": float32, "arousal": float32 (NaN if absent), "source_id": str}

Each dataset module registers a loader ``fn(split, config) -> Split`` in ``SOURCES``
under its name; ``config`` is the ``config.data`` ConfigDict. ``MODULES`` names the module
that registers each source, and ``load`` imports only that one, so loading the synthetic or
arrays source never imports tensorflow_datasets.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol

import ml_collections
import numpy as np

from bregflax.registry import Registry

FER2013_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")


class Source(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not prepared; the message says what to download and where to put it."""


@dataclasses.dataclass(frozen=True)
class Split:
    """A loaded split, with what the weighted loss and the reports need."""

    source: Source
    class_counts: np.ndarray  # training-split counts per class (weighted loss); empty if no labels
    class_names: tuple[str, ...]


SOURCES: Registry = Registry("data source")

# Source name -> the module under bregflax.data that registers it.
MODULES = {
    "synthetic": "synthetic",
    "arrays": "arrays",
    "fer2013": "fer2013",
    "affectnet": "affectnet",
    "affectnet7": "affectnet",
    "affectnet_va": "affectnet",
    "aff_wild": "aff_wild",
}


def names() -> list[str]:
    """Every source name ``load`` accepts, registered yet or not."""
    return sorted(set(MODULES) | set(SOURCES.names()))


def load(name: str, split: str, config: ml_collections.ConfigDict) -> Split:
    """Loads split ``split`` of dataset ``name``; raises DatasetNotFoundError if unprepared."""
    if name not in SOURCES:
        if name not in MODULES:
            raise KeyError(f"unknown data source {name!r}; known: {', '.join(names())}")
        importlib.import_module(f"{__name__}.{MODULES[name]}")
    return SOURCES.get(name)(split, config)
