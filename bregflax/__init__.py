"""bregflax: BReG-Net (bounded residual gradient networks) for facial affect, in JAX/Flax.

The expression of every face, in one line, with the shipped FER2013 model:

    import bregflax

    bregflax.detect_emotions("photo.jpg")  # or an RGB / gray uint8 array
    # [{"box": [x, y, width, height], "label": "Happy", "label_index": 3,
    #   "probs": {"Angry": 0.01, ...}}, ...]

    for row in bregflax.video_emotions("clip.mp4", every=5):
        row["frame"], row["time_s"], row["box"], row["label"], row["probs"]

These run the same engine as ``bregflax predict`` (:mod:`bregflax.inference.engine`). Importing
bregflax loads nothing heavy: jax and OpenCV are imported by the first call.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__", "detect_emotions", "video_emotions"]


def __getattr__(name: str):
    if name == "Predictor":  # jax: imported when first asked for
        from bregflax.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'bregflax' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API only (``bregflax.__all__``), not the helpers behind it."""
    return sorted(__all__)


def _cached(maxsize: int):
    from functools import lru_cache

    return lru_cache(maxsize=maxsize)


@_cached(maxsize=4)
def _predictor(model: str):
    from bregflax.inference.predictor import Predictor

    return Predictor.from_pretrained(model)


@_cached(maxsize=4)
def _detector(min_face: float, name: str = "yunet"):
    from bregflax.inference.yunet import make_detector

    return make_detector(name, min_face)


def detect_emotions(
    image,
    *,
    model: str = "fer2013",
    predictor=None,
    min_face=None,
    detector: str = "yunet",
    align: bool = True,
) -> list:
    """Every face in ``image``, largest first:
    ``[{"box", "label", "label_index", "probs"}, ...]``.

    ``image``: a path, or an array: RGB (H, W, 3) or gray (H, W), uint8 or float in [0, 1]
    (OpenCV's ``imread`` gives BGR: convert it first). ``box`` is [x, y, width, height] in
    whole pixels; ``probs`` maps each class name to its probability (6 decimals), ``label``
    is the likeliest class's name and ``label_index`` its index (a valence/arousal model
    gives ``valence`` and ``arousal`` instead or as well). The keys and rounding of
    ``bregflax predict``'s rows (:func:`bregflax.inference.engine.face_fields`).
    ``model``: a shipped model's name; ``predictor``: a
    :class:`~bregflax.inference.predictor.Predictor` of your own instead. ``min_face``: the smallest
    face side in pixels (default: the model's 48-pixel input). ``detector``: ``"yunet"``
    (a small CNN shipped in the package) or ``"haar"`` (OpenCV's cascade); ``align``: turn
    YuNet's crops so the eyes are level. Raises FileNotFoundError or ValueError for a file
    it cannot read or an array it cannot use.
    """
    from pathlib import Path

    import numpy as np

    from bregflax.data import media
    from bregflax.inference import engine as inference
    from bregflax.inference.detect import MIN_FACE
    from bregflax.inference.predictor import as_uint8

    options = inference.Options(  # ValueError for a bad one
        min_face=min_face or MIN_FACE, detector=detector, align=align
    )
    if isinstance(image, np.ndarray):
        image, path = as_uint8(image), "<array>"
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3))):
            raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    else:
        path = str(image)
        image = media.read_image(path)
        if image is None:
            raise (ValueError if Path(path).is_file() else FileNotFoundError)(
                f"cannot read an image from {path}"
            )
    predictor = predictor or _predictor(model)
    frame = inference.Frame(path=path, image=image)
    found = _detector(float(options.min_face), options.detector)
    boxes, source = inference.face_boxes(frame, options, found)
    crops, errors = inference.crops(frame, boxes, source, predictor, options.margin, align)
    kept = [i for i, error in enumerate(errors) if not error]
    if not kept:
        return []
    out = predictor.predict_faces(np.stack([crops[i] for i in kept]))
    none = [None] * len(kept)
    probs, va = out.get("probs", none), out.get("va", none)
    names = predictor.class_names
    return [inference.face_fields(boxes[i], names, probs[j], va[j]) for j, i in enumerate(kept)]


def video_emotions(
    path,
    every: int = 1,
    *,
    model: str = "fer2013",
    predictor=None,
    min_face=None,
    redetect_every=None,
    detector: str = "yunet",
    align: bool = True,
):
    """One row per face in every ``every``-th frame of the video at ``path``, as read.

    Each row: ``frame`` (from 0), ``time_s`` (None where the file gives no frame rate),
    ``face`` (its index in the frame, largest first), ``box``, ``label``, ``label_index`` and
    ``probs`` (as :func:`detect_emotions`, and as ``bregflax predict`` writes them). Frames
    without a face give no row. The video is streamed: memory does not grow with its length.
    ``redetect_every``: the whole frame is searched every that many frames read (see
    ``bregflax predict --help``); ``detector`` and ``align`` as for :func:`detect_emotions`.
    A file that cannot be read raises FileNotFoundError or ValueError; frames missing at the
    end of a damaged file give a warning.
    """
    import warnings

    from bregflax.inference import engine as inference
    from bregflax.inference.detect import MIN_FACE, REDETECT_EVERY

    predictor = predictor or _predictor(model)
    options = inference.Options(
        min_face=min_face or MIN_FACE,
        redetect_every=redetect_every or REDETECT_EVERY,
        detector=detector,
        align=align,
    )
    for row in inference.run(predictor, [str(path)], options, every, progress=False):
        status = row["status"]
        if status == "ok":
            keys = ("frame", "time_s", "face", "box", "label", "label_index", "probs")
            yield {k: row[k] for k in (*keys, "valence", "arousal") if k in row}
        elif status == "warning":
            warnings.warn(f"{path}: {row['error']}", stacklevel=2)
        elif status in ("error", "skipped"):
            kind = FileNotFoundError if row["error"] == "no such file" else ValueError
            raise kind(f"{path}: {row['error']}")
