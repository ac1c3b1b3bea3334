"""The :class:`Predictor`: a trained model ready for inference on face images.

    from bregflax.inference.predictor import Predictor

    predictor = Predictor.from_pretrained("fer2013")  # or Predictor.from_workdir("runs/x")
    out = predictor.predict(images)  # uint8 arrays of any size, gray or RGB
    out["probs"], out["label"], out["label_index"]  # (+ out["valence"], out["arousal"])

The forward pass is jit-compiled for the batch sizes in ``BUCKETS`` only: a batch is padded
to the next one and larger batches run in chunks of the largest, so no new batch size
compiles again. Each BatchNorm is folded into the convolution before it
(:mod:`bregflax.nn.fold`; ``fold=False`` runs the network as trained, for comparison); outputs
are the same to float32 rounding. Loading a training run goes through
:mod:`bregflax.training.checkpoints`, never the trainer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from bregflax.data import FER2013_CLASSES, pipeline
from bregflax.inference import DECIMALS, weights
from bregflax.nn import fold as folding
from bregflax.nn import models

PRETRAINED_DIR = weights.WEIGHTS_DIR  # where from_pretrained looks (tests point it elsewhere)
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # batch sizes compiled when first used; larger
# batches run in chunks of 256. Powers of two: a batch never computes over 2x its faces.


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The class names of a run's dataset (``()`` for a valence/arousal-only model)."""
    if config.model.head == "va":
        return ()
    n = config.model.num_classes
    if config.data.source.startswith("affectnet"):
        from bregflax.data.affectnet import AFFECTNET_CLASSES

        return AFFECTNET_CLASSES[:n]
    if config.data.source == "arrays":
        from bregflax.data.arrays import class_names as arrays_class_names

        names = arrays_class_names(config.data)
        if len(names) == n:
            return names
    return FER2013_CLASSES if n == len(FER2013_CLASSES) else tuple(f"class{i}" for i in range(n))


def bucket(n: int) -> int:
    """The smallest compiled batch size that holds ``n`` (``n`` at most the largest)."""
    return next(b for b in BUCKETS if b >= n)


def forward(
    model: nn.Module, variables: Any, images: jax.Array, flip: bool = False, folded: bool = False
) -> dict[str, jax.Array]:
    """uint8 (n, S, S, C) faces -> ``probs`` and/or ``va``, normalized as in training.

    With ``flip``, outputs are averaged over each face and its mirror image. ``folded``:
    ``variables`` come from :func:`bregflax.nn.fold.fold_batchnorm`.
    """
    x = pipeline.normalize(images)
    views = [x, x[:, :, ::-1]] if flip else [x]
    if folded:
        outs = [folding.apply(model, variables, v) for v in views]
    else:
        outs = [model.apply(variables, v, train=False) for v in views]
    result = {}
    if "logits" in outs[0]:
        result["probs"] = sum(jax.nn.softmax(o["logits"], axis=-1) for o in outs) / len(outs)
    if "va" in outs[0]:
        result["va"] = sum(o["va"] for o in outs) / len(outs)
    return result


@functools.lru_cache(maxsize=8)
def compiled_forward(model: nn.Module, flip: bool = False, folded: bool = False):
    """``jax.jit(forward)`` for one model, ``flip`` and ``folded``, shared by every Predictor
    of that model (flax modules compare by value): loading it again does not recompile."""
    return jax.jit(functools.partial(forward, model, flip=flip, folded=folded))


def as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 unchanged; floating point in [0, 1] scaled to [0, 255]; anything else raises."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if image.size and not (np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1):
            raise ValueError("a floating-point image must hold values in [0, 1]")
        return np.round(image * 255).astype(np.uint8)
    raise ValueError(f"images must be uint8 or floating point in [0, 1], got {image.dtype}")


@dataclasses.dataclass
class Predictor:
    """A trained model ready for inference on face images of any size, gray or colour."""

    model: nn.Module
    variables: Any
    class_names: tuple[str, ...]
    image_size: int = 48
    channels: int = 1
    info: dict = dataclasses.field(default_factory=dict)  # provenance and val metrics
    flip: bool = False  # average each face with its mirror image (2x the compute)
    fold: bool = True  # run with each BatchNorm folded into its convolution

    def __post_init__(self):
        self.variables = jax.device_put(self.variables)
        self.inference_variables = self.variables  # what the compiled forward is given
        if self.fold:
            shape = (1, self.image_size, self.image_size, self.channels)
            folded = folding.fold_batchnorm(self.model, self.variables, shape)
            self.inference_variables = jax.device_put(folded)
        self._forward = compiled_forward(self.model, self.flip, self.fold)
        self.compiled_batch_sizes: set[int] = set()  # the buckets this predictor has run

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        variables: Any,
        info: dict | None = None,
        flip: bool = False,
    ) -> Predictor:
        return cls(
            model=models.create_model(config.model),
            variables=variables,
            class_names=class_names(config),
            image_size=int(config.data.image_size),
            channels=int(config.data.channels),
            info=info or {},
            flip=flip,
        )

    @classmethod
    def from_pretrained(cls, name: str = "fer2013") -> Predictor:
        """Weights shipped in the package (``bregflax/weights/<name>/``)."""
        folder = PRETRAINED_DIR / name
        if not (folder / weights.PARAMS_FILE).is_file():
            have = weights.shipped(PRETRAINED_DIR)
            raise FileNotFoundError(f"no shipped model {name!r}; shipped: {have or 'none'}")
        config, variables, info = weights.read(folder)
        predictor = cls.from_config(config, variables, info, flip=info.get("flip", False))
        predictor.class_names = tuple(info.get("class_names", predictor.class_names))
        return predictor

    @classmethod
    def from_workdir(
        cls, workdir: str | Path, checkpoint: str = "best", data_dir: str | None = None
    ) -> Predictor:
        """Checkpoint ``checkpoint`` (best | latest | STEP) of a training run; its data
        (for class names an ``arrays`` dataset gives) where the run recorded them, or in
        ``data_dir``."""
        from bregflax import echoes
        from bregflax.data import run_data
        from bregflax.training import checkpoints  # orbax: imported only when a run is loaded

        with echoes.suppressed():  # removes its hooks on return: the caller inherits none
            config, variables, step = checkpoints.load_variables(workdir, checkpoint)
        run_data.apply(config, workdir, data_dir)
        info = {"workdir": str(workdir), "checkpoint": checkpoint, "step": int(step)}
        return cls.from_config(config, variables, info)

    @classmethod
    def load(
        cls,
        workdir: str | None,
        checkpoint: str = "best",
        model: str = "fer2013",
        data_dir: str | None = None,
    ) -> Predictor:
        """A training run's checkpoint when ``workdir`` is given, else the shipped ``model``."""
        if workdir:
            return cls.from_workdir(workdir, checkpoint, data_dir)
        return cls.from_pretrained(model)

    @property
    def has_va(self) -> bool:
        return "va_regressor" in self.variables["params"]

    def preprocess(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Images -> uint8 (n, S, S, C) at the model's size and channels (plain resize).

        A single ndarray is a batch, (n, H, W) gray or (n, H, W, C); a list may mix sizes.
        """
        if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
            raise ValueError(
                f"a batch array must be (n, H, W) or (n, H, W, C), got shape {images.shape}; "
                "pass a single image as [image]"
            )
        out = np.zeros((len(images), self.image_size, self.image_size, self.channels), np.uint8)
        for i, image in enumerate(images):
            try:
                out[i] = pipeline.to_shape(as_uint8(image), self.image_size, self.channels)
            except ValueError as e:
                raise ValueError(f"image {i}: {e}") from None
        return out

    def predict_faces(self, faces_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs for uint8 (n, S, S, C) faces, run in compiled bucket sizes."""
        n = len(faces_uint8)
        if n == 0:
            widths = {"probs": len(self.class_names)} if self.class_names else {}
            widths.update({"va": 2} if self.has_va else {})
            return {k: np.zeros((0, d), np.float32) for k, d in widths.items()}
        parts: dict[str, list] = {}
        for start in range(0, n, BUCKETS[-1]):
            chunk = faces_uint8[start : start + BUCKETS[-1]]
            size = bucket(len(chunk))
            padded = np.zeros((size, *chunk.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            self.compiled_batch_sizes.add(size)
            out = jax.device_get(self._forward(self.inference_variables, padded))
            for k, v in out.items():
                parts.setdefault(k, []).append(np.asarray(v)[: len(chunk)])
        return {k: np.concatenate(v) for k, v in parts.items()}

    def predict(self, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, Any]:
        """Class probabilities, the likeliest class's name (``label``) and index
        (``label_index``), and valence/arousal where the model has them: the keys of
        ``bregflax predict``'s rows, one entry per image, rounded as they are (``DECIMALS``)."""
        out = self.predict_faces(self.preprocess(images))
        result: dict[str, Any] = {}
        if "probs" in out:
            result["probs"] = np.round(out["probs"], DECIMALS)
            result["label_index"] = out["probs"].argmax(-1).astype(np.int32)
            result["label"] = [self.class_names[i] for i in result["label_index"]]
        if "va" in out:
            va = np.round(out["va"], DECIMALS)
            result["valence"], result["arousal"] = va[:, 0], va[:, 1]
        return result
