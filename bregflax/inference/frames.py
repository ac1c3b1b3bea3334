"""The frames of one input, as the engine reads them: a photo, or every ``every``-th frame
of a video with its time from the container, and a warning for frames a damaged file lacks;
an image over the size limit becomes an error frame before it is read."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from bregflax import hostile
from bregflax.data import media
from bregflax.data.media import Frame


def frames(path: Path, rel: str, every: int) -> Iterator[Frame]:
    """The frames of one input: one for a photo, every ``every``-th for a video.

    A video whose frames stop before the count its header gives, or some of whose frames
    fail to decode, ends with a frame that has no image and a ``warning`` naming them.
    """
    if not path.is_file():
        yield Frame(str(path), None, error="no such file")
        return
    if not media.is_video(path):
        image = media.read_image(path)
        error = "" if image is not None else "cannot decode image"
        yield Frame(str(path), image, error=error, rel=rel)
        return
    video, undecoded, decoded = media.Video(path, every), [], 0
    for index, rgb in video:
        if rgb is None:
            undecoded.append(index)
        else:
            decoded += 1
            yield Frame(str(path), rgb, index, video.time_s(index), rel=rel, fps=video.fps / every)
    count, read = video.frame_count, video.frames_read
    header = f" (its header gives {count} frames)" if count else ""
    if not decoded:
        yield Frame(str(path), None, error=f"cannot decode video (no frames read){header}")
        return
    missing = []
    if video.ends_early():
        missing.append(
            f"frames {ranges(range(read, count))} missing: only {read} of the {count} frames "
            f"its header gives could be read{video.time_note()} (truncated or damaged file?)"
        )
    if undecoded:
        missing.append(f"frame(s) {ranges(undecoded)} could not be decoded")
    if missing:
        yield Frame(str(path), None, rel=rel, warning="; ".join(missing))


def ranges(numbers: Iterable[int], most: int = 8) -> str:
    """``0, 4-7, 9``: sorted integers as runs, the first ``most`` runs and a count of the rest."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most]]
    more = f" and {len(runs) - most} more" if len(runs) > most else ""
    return ", ".join(text) + more


def expected_frames(entry: media.Input, every: int) -> int:
    """The frames :func:`run` will read from ``entry``: 1 for a photo, a video's sampled
    frames as its header gives them (1 if it gives none), 0 for a skipped entry."""
    if entry.skip:
        return 0
    if not media.is_video(entry.path):
        return 1
    import cv2

    capture = cv2.VideoCapture(str(entry.path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()
    return max(math.ceil(count / every), 1)


def too_large(path: Path, limit: int) -> Frame | None:
    """The error frame of an image file over ``limit`` bytes, found before it is read."""
    if media.is_video(path) or not path.is_file():
        return None
    try:
        hostile.check_size(path, limit, "--max-file-size")
    except hostile.FileTooLargeError as e:
        return Frame(str(path), None, error=f"not read: {e}")
    return None
