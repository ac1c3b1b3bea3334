"""Runs a model written by ``bregflax export`` with nothing but jax (and numpy).

    from bregflax.inference.runtime import ExportedModel
    model = ExportedModel.load("model.bin")
    out = model(faces)  # uint8 (n, 48, 48, 1) face crops -> {"probs": (n, 7), "va": ...}

This module imports only the standard library, numpy and jax (whose ``jax.export``
needs ``flatbuffers``), so it can be copied next to an application that does not install
bregflax. The file holds a line ``BREGFLAX-EXPORT 1``, a JSON header (class names, input
shape, provenance) and the serialized StableHLO, whose batch dimension is symbolic.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

MAGIC = b"BREGFLAX-EXPORT 1\n"


def pack(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return MAGIC + len(text).to_bytes(8, "little") + text + payload


def unpack(blob: bytes) -> tuple[dict, bytes]:
    if not blob.startswith(MAGIC):
        raise ValueError("not a bregflax export (bad magic line)")
    at = len(MAGIC)
    size = int.from_bytes(blob[at : at + 8], "little")
    header = json.loads(blob[at + 8 : at + 8 + size])
    return header, blob[at + 8 + size :]


class ExportedModel:
    """A deserialized bregflax model: call it on uint8 face crops of the header's shape."""

    def __init__(self, header: dict, exported: export.Exported):
        self.header, self.exported = header, exported
        self.class_names = tuple(header.get("class_names", ()))
        self.image_size, self.channels = header["image_size"], header["channels"]

    @classmethod
    def load(cls, path: str | Path) -> ExportedModel:
        header, payload = unpack(Path(path).read_bytes())
        return cls(header, export.deserialize(bytearray(payload)))

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W[, C]) -> (n, S, S, C) by bilinear resize and channel mean / repeat."""
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.dtype != np.uint8:
            raise ValueError(f"expected uint8 (n, H, W[, C]), got {x.dtype} {x.shape}")
        if x.shape[-1] != self.channels:
            gray = x[..., :3] @ np.float32([0.299, 0.587, 0.114])  # ITU-R 601, as OpenCV
            x = gray[..., None] if self.channels == 1 else np.repeat(x, 3, -1)
        if x.shape[1:3] != (self.image_size, self.image_size):
            shape = (len(x), self.image_size, self.image_size, self.channels)
            x = jax.image.resize(jnp.asarray(x, jnp.float32), shape, "linear", antialias=True)
        return np.clip(np.round(np.asarray(x)), 0, 255).astype(np.uint8)

    def __call__(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        faces = np.asarray(faces)
        want = (self.image_size, self.image_size, self.channels)
        if faces.dtype != np.uint8 or faces.shape[1:] != want:
            raise ValueError(f"expected uint8 (n, {want}), got {faces.dtype} {faces.shape}")
        return {k: np.asarray(v) for k, v in self.exported.call(faces).items()}
