"""Reading files that may be hostile, and values and names that are not plain.

* :func:`check_size`, :func:`read_json`, :func:`load_npy`, :func:`check_npz`: a file is
  checked by its size (or its header) before it is read, and one that cannot be parsed is
  named with what to do; :func:`csv_any_length` lets the csv module read a field of any size.
* :func:`strict_json` / :func:`finite`: JSON without NaN or Infinity (``null``, and the paths
  it replaced).
* :func:`text_path` / :func:`path_from_text`: file names that are not valid UTF-8, written as
  text with each byte that is not UTF-8 as ``\\xNN``, and read back to the same bytes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bregflax import paths

MiB = 1 << 20
MAX_IMAGE_BYTES = 256 * MiB  # an image file larger than this is refused before it is read
MAX_JSON_BYTES = 64 * MiB


class FileTooLargeError(ValueError):
    """A file over the size a reader accepts; the message names it and the limit."""


class DamagedFileError(ValueError):
    """A file that cannot be parsed; the message names it and says what to do."""


def finite(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """``value`` with every NaN or infinite float (also in numpy types, lists and dicts) as
    None, and the dotted paths of those replaced."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return (value, []) if math.isfinite(value) else (None, [f"{where or 'value'}={value}"])
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], more = finite(v, f"{where}.{k}" if where else str(k))
            bad += more
        return out, bad
    if isinstance(value, list | tuple):
        out, bad = [], []
        for i, v in enumerate(value):
            item, more = finite(v, f"{where}[{i}]")
            out.append(item)
            bad += more
        return out, bad
    return value, []


def strict_json(value: Any, reason_key: str | None = None, **kwargs) -> str:
    """``json.dumps`` that never writes NaN or Infinity: they become ``null``; with
    ``reason_key`` (and ``value`` a dict), that key says which values were replaced.
    Text that is not valid UTF-8 (surrogate escapes) is written as :func:`text_path`."""
    clean, bad = finite(_texts(value))
    if bad and reason_key and isinstance(clean, dict):
        note = f"not finite, written as null: {', '.join(bad)}"
        old = clean.get(reason_key)
        clean[reason_key] = f"{old}; {note}" if old else note
    return json.dumps(clean, allow_nan=False, default=_plain, **kwargs)


def _plain(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return text_path(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _texts(value):
    if isinstance(value, str):
        return text_path(value)
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_texts(v) for v in value]
    return value


_SURROGATE = re.compile("[\udc80-\udcff]")
_ESCAPED = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def text_path(path: str | bytes | os.PathLike) -> str:
    """A file name as text that can be written in UTF-8: each byte of the name that is not
    valid UTF-8 (held by Python as a surrogate escape) becomes ``\\xNN``. Valid names are
    unchanged. :func:`path_from_text` gives the name back."""
    text = os.fsdecode(path)
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def path_from_text(text: str) -> str:
    """The file name (as Python holds it, ``os.fsencode`` gives its bytes) that
    :func:`text_path` wrote as ``text``."""
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def check_size(path: str | os.PathLike, limit: int, flag: str = "") -> int:
    """The size of ``path``; FileTooLargeError, before anything is read, over ``limit``."""
    size = os.stat(path).st_size
    if size > limit:
        raise FileTooLargeError(
            f"{text_path(path)} is {human(size)}, over the {human(limit)} limit"
            + (f" (raise it with {flag})" if flag else "")
        )
    return size


def read_json(path: str | os.PathLike, advice: str = "delete it (or move it away) and rerun",
              limit: int = MAX_JSON_BYTES) -> Any:  # fmt: skip
    """The JSON in ``path``; DamagedFileError naming the file and what to do if it cannot
    be parsed (cut off by a kill, say)."""
    if paths.is_remote(path):  # object storage (bregflax.paths)
        if (size := paths.size(path)) > limit:
            raise FileTooLargeError(f"{path} is {human(size)}, over the {human(limit)} limit")
        data = paths.path(path).read_bytes()
    else:
        check_size(path, limit)
        data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f"line {e.lineno} column {e.colno}: " if isinstance(e, json.JSONDecodeError) else ""
        raise DamagedFileError(
            f"{text_path(path)} is not valid JSON ({where}{getattr(e, 'msg', e)}; "
            f"{len(data)} bytes): it was cut off or damaged; {advice}"
        ) from None


def csv_any_length() -> None:
    """Lets Python's csv read fields of any length (its default stops at 131,072
    characters); a record's length is then judged by its own checks."""

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _npy_header(f, size: int, name: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype an .npy stream declares; ValueError if its data could not fit
    in ``size`` bytes (a header that declares petabytes)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise ValueError(f"{name}: holds Python objects, which are not read")
    count = math.prod(shape)
    if count * dtype.itemsize > size:
        raise ValueError(
            f"{name}: header declares {shape} {dtype} ({human(count * dtype.itemsize)}) but "
            f"the data is {human(size)}: damaged or not what it claims"
        )
    return shape, dtype


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """An .npy file, its header checked against the file's size first (ValueError)."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        _npy_header(f, size, text_path(path))
    return np.load(path, allow_pickle=False)


def check_npz(path: str | os.PathLike) -> None:
    """ValueError naming ``path`` and the array if an .npz member's header declares more
    data than the member holds (numpy would try to allocate it: MemoryError)."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                _npy_header(f, info.file_size, f"{text_path(path)}: array {info.filename[:-4]}")
