"""What the FER2013, AffectNet and Aff-Wild TFDS builders share.

Each is a ``tfds.core.GeneratorBasedBuilder`` that writes ``array_record`` files with plain
tensor features, so neither building nor reading needs TensorFlow. Build settings (image
size, channels, margin, held-out fraction, ...) make up the builder config's name, so a
different size is prepared as a separate copy next to the first::

    <data_dir>/<dataset>/<config name>/<version>/
        <dataset>-<split>.array_record-00000-of-0000N
        dataset_info.json, features.json, metadata.json, build_report.json

``metadata.json`` and ``build_report.json`` hold the build report (kept per split, label
counts, skipped input per reason), so the training-split class counts need no scan.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from bregflax.data import DatasetNotFoundError, Split, build_report
from bregflax.data.build_report import BadRecordError, BuildReport, EmptySplitError

FILE_FORMAT = "array_record"
DATA_DIR_ENV = "BREGFLAX_DATA_DIR"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"


WAYS_TO_DATA = (
    f"Data elsewhere? Point at its data directory (the folder holding downloads/manual/) "
    f"with ${DATA_DIR_ENV}=DIR, --data-dir=DIR (evaluate, predict, reproduce) or "
    "--config.data.data_dir=DIR (train); a run records its own in WORKDIR/data.json."
)


def data_dir(config: ml_collections.ConfigDict) -> Path:
    """``config.data_dir``, else $BREGFLAX_DATA_DIR, else ~/tensorflow_datasets."""
    path = config.get("data_dir", "") or os.environ.get(DATA_DIR_ENV, "") or DEFAULT_DATA_DIR
    return Path(path).expanduser()


def manual_dir(config: ml_collections.ConfigDict, name: str) -> Path:
    """``config.manual_dir``, else ``<data_dir>/downloads/manual/<name>``."""
    path = config.get("manual_dir", "")
    return Path(path).expanduser() if path else data_dir(config) / "downloads" / "manual" / name


def features(size: int, channels: int) -> tfds.features.FeaturesDict:
    """The record features: plain tensors plus a text ``source_id``."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(size, size, channels), dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int32),
            "valence": tfds.features.Tensor(shape=(), dtype=np.float32),
            "arousal": tfds.features.Tensor(shape=(), dtype=np.float32),
            "source_id": tfds.features.Text(),
        }
    )


def example(
    image: np.ndarray,
    source_id: str,
    label: int = -1,
    valence: float = np.nan,
    arousal: float = np.nan,
) -> dict[str, Any]:
    """One record in the feature format."""
    return {
        "image": image,
        "label": np.int32(label),
        "valence": np.float32(valence),
        "arousal": np.float32(arousal),
        "source_id": source_id,
    }


@dataclasses.dataclass(eq=False)
class FaceConfig(tfds.core.BuilderConfig):
    """Build settings; ``name`` spells out every one that changes the prepared data."""

    image_size: int = 48
    channels: int = 1
    margin: float = 0.0
    align: bool = False
    holdout_fraction: float = 0.1
    seed: int = 0
    task: str = ""
    stride: int = 1

    def params(self) -> dict[str, Any]:
        skip = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def config_name(*parts: str, size: int, channels: int, **numbers: float) -> str:
    """E.g. ``cat8_64px_rgb_margin0.2_seed0``: task parts, size, colour, then numbers."""
    colour = "gray" if channels == 1 else "rgb"
    tail = [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in numbers.items()]
    return "_".join([*parts, f"{size}px", colour, *tail])


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """A seeded boolean mask holding out ``round(fraction * n_c)`` items of every class c."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed)
    for value in np.unique(labels):
        index = np.flatnonzero(labels == value)
        take = int(round(fraction * len(index)))
        mask[index[rng.permutation(len(index))[:take]]] = True
    return mask


def check_range(value: str, low: float, high: float, name: str) -> float:
    """Parses a float in [low, high]; raises ValueError(reason) otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}_not_numeric") from None
    if not np.isfinite(number):
        raise ValueError(f"{name}_not_numeric")
    if not low <= number <= high:
        raise ValueError(f"{name}_out_of_range")
    return number


class FaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: subclasses implement ``plan(manual_dir) -> {split: examples}``.

    ``plan`` returns, for every split the source has, an iterable of examples (it may be
    empty after bad input is dropped: that is an error); splits the source lacks go in
    ``self.report.absent_splits``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    CLASS_NAMES: tuple[str, ...] = ()
    DESCRIPTION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the optional ``importlib_resources`` for package modules.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, strict: bool = False, **kwargs):
        self.strict = strict
        super().__init__(**kwargs)

    def _create_builder_config(self, builder_config, version):
        if isinstance(builder_config, FaceConfig):  # made from config.data: no warning
            return builder_config
        return super()._create_builder_config(builder_config, version)

    @property
    def face_config(self) -> FaceConfig:
        return self.builder_config

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.CLASS_NAMES

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.face_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=features(config.image_size, config.channels),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # records keep the source order
        )

    def plan(self, manual: Path) -> dict[str, Iterable[dict[str, Any]]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        self.report = BuildReport(
            dataset=self.name,
            config={"name": self.face_config.name, **self.face_config.params()},
            num_classes=len(self.class_names),
            strict=self.strict,
        )
        splits = self.plan(Path(dl_manager.manual_dir))
        return {split: self.report.track(split, examples) for split, examples in splits.items()}

    def _generate_examples(self, **kwargs):  # splits come from ``plan``
        raise NotImplementedError

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        # self.data_dir is the temporary build dir here: all appears at once, or nothing.
        self.info.metadata["build_report"] = self.report.to_dict()
        self.report.write(self.data_dir)
        print(self.report.summary(), flush=True)


class RecordSource:
    """A prepared split as contract records (numpy scalars, ``source_id`` as str)."""

    def __init__(self, source: Any):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return to_record(self._source[index])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [to_record(r) for r in self._source.__getitems__(list(indices))]


def to_record(raw: dict[str, Any]) -> dict[str, Any]:
    source_id = raw["source_id"]
    return {
        "image": np.asarray(raw["image"], np.uint8),
        "label": np.int32(raw["label"]),
        "valence": np.float32(raw["valence"]),
        "arousal": np.float32(raw["arousal"]),
        "source_id": source_id.decode() if isinstance(source_id, bytes) else str(source_id),
    }


def prepare(
    builder: FaceBuilder, manual: Path, detect: Callable[[Path], str | None], instructions: str
) -> None:
    """Builds once from the raw files in ``manual``; reuses prepared data afterwards."""
    if builder.is_prepared():
        return
    if detect(manual) is None:
        raise DatasetNotFoundError(
            f"{builder.name} is not prepared (looked for {builder.data_dir}) and no raw files "
            f"were found in {manual}.\n{instructions.strip()}\nPut them in: {manual}\n"
            f"{WAYS_TO_DATA}"
        )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)),
        file_format=FILE_FORMAT,
    )


def load_split(
    builder: FaceBuilder,
    config: ml_collections.ConfigDict,
    name: str,
    detect: Callable[[Path], str | None],
    instructions: str,
    split: str,
) -> Split:
    """Prepares ``builder`` from ``config``'s manual folder on first use, then opens ``split``."""
    prepare(builder, manual_dir(config, name), detect, instructions)
    return open_split(builder, split)


def open_split(builder: FaceBuilder, split: str, train_split: str = "train") -> Split:
    """The prepared ``split`` with the training-split class counts from the build report."""
    report = builder.info.metadata.get("build_report") or build_report.read(builder.data_dir)
    report = report or {}
    if split not in builder.info.splits:
        known = ", ".join(sorted(builder.info.splits)) or "none"
        absent = " (absent from the source)" if split in report.get("absent_splits", []) else ""
        raise EmptySplitError(
            f"{builder.name}/{builder.builder_config.name} has no split {split!r}{absent}; "
            f"prepared splits: {known}. Build report: {builder.data_dir}/{build_report.FILENAME}"
        )
    if builder.strict and report.get("bad_input"):
        reason, entry = next(iter(report["bad_input"].items()))
        raise BadRecordError(
            f"{entry['examples'][0]}: {reason} (strict=True, but the prepared data at "
            f"{builder.data_dir} was built with {entry['count']} such records dropped)"
        )
    names = builder.class_names
    counts = report.get("label_counts", {}).get(train_split, [0] * len(names))
    source = RecordSource(builder.as_data_source(split))
    return Split(source, np.asarray(counts, np.int64), names)


def make_builder(
    cls: type[FaceBuilder], builder_config: FaceConfig, config: ml_collections.ConfigDict
) -> FaceBuilder:
    return cls(
        data_dir=os.fspath(data_dir(config)),
        config=builder_config,
        file_format=FILE_FORMAT,
        strict=bool(config.get("strict", False)),
    )


def list_files(folder: Path) -> list[Path]:
    """All files under ``folder``, sorted (non-images too, so they can be counted)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())
