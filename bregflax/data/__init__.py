"""One way in to every dataset: ``load(name, split, config)``.

A *source* is random-access (``len`` and ``__getitem__``) and yields records::

    {"image": uint8 (H, W, C), "label": int32 (-1 if absent),
     "valence": float32, "arousal": float32 (NaN if absent), "source_id": str}

Each dataset module registers a loader ``fn(split, config) -> Split`` in ``SOURCES``
under its name; ``config`` is the ``config.data`` ConfigDict.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
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

_MODULES = ("synthetic", "fer2013", "affectnet", "aff_wild")


def _register_all() -> None:
    for module in _MODULES:
        name = f"{__name__}.{module}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def load(name: str, split: str, config: ml_collections.ConfigDict) -> Split:
    """Loads split ``split`` of dataset ``name``; raises DatasetNotFoundError if unprepared."""
    _register_all()
    return SOURCES.get(name)(split, config)
