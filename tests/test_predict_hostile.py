"""``bregflax predict`` against a hostile but fair user (issue 18, cases 1-5, 10, 13-18).

Each test reproduces one way predict used to lose a file, write where it should not, die on
one bad input, or print a traceback where a sentence would do.
"""

import csv
import errno
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import pytest

from bregflax import safe_io
from bregflax.data import synthetic
from bregflax.inference import predict


def _face(seed=0):
    """A face-like gray image of the synthetic set, 48 x 48."""
    return synthetic.make_faces(3, seed=1)["image"][seed % 3, ..., 0]


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = predict.main([*map(str, args), "--no-progress"])
    return code, out.getvalue(), err.getvalue()


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def photos(tmp_path):
    """photos/a.png, photos/b.png and photos/ann/a.png: three different small faces."""
    folder = tmp_path / "photos"
    (folder / "ann").mkdir(parents=True)
    for i, rel in enumerate(("a.png", "b.png", "ann/a.png")):
        cv2.imwrite(str(folder / rel), cv2.resize(_face(i), (96, 96)))
    return folder


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}


# --------------------------------------------------------------------------- outputs (1-3)


@pytest.mark.parametrize("into", [".", "ann"])
def test_annotations_never_replace_an_input(photos, into):
    """Case 1: --annotate equal to, or inside, the input folder keeps every original."""
    before = _snapshot(photos)
    code, out, err = _cli(photos, "--annotate", photos / into, "--no-detect", "--format", "jsonl")
    assert code == 0, err
    rows = _jsonl(out)
    assert [r["status"] for r in rows] == ["ok"] * 3
    after = _snapshot(photos)
    assert {k: after[k] for k in before} == before  # no input changed
    written = [Path(r["annotation"]) for r in rows]
    assert len(set(written)) == 3 and all(p.is_file() for p in written)
    assert not {p.resolve() for p in written} & {(photos / k).resolve() for k in before}
    assert "renamed" in err  # the summary says which annotations got another name


def test_same_name_in_two_places_gives_two_annotations(tmp_path):
    """Case 2: a/p.png and b/p.png (given directly) are annotated to two files."""
    for i, sub in enumerate("ab"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "p.png"), np.full((60, 60), 40 + 150 * i, np.uint8))
    ann = tmp_path / "ann"
    code, out, _ = _cli(tmp_path / "a/p.png", tmp_path / "b/p.png", "--annotate", ann,
                        "--no-detect", "--format", "jsonl")  # fmt: skip
    assert code == 0
    written = [Path(r["annotation"]) for r in _jsonl(out)]
    assert all(p.parent == ann for p in written)
    assert [p.name for p in written] == ["p.png", "p-2.png"]
    means = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[30:, :].mean() for p in written]
    assert abs(means[0] - 40) < 5 and abs(means[1] - 190) < 5  # each its own picture


def test_out_naming_an_input_is_refused_before_it_is_touched(photos, tmp_path):
    """Case 3: --out equal to an input (or to the --boxes file) exits 2, file intact."""
    before = (photos / "a.png").read_bytes()
    code, _, err = _cli(photos, "--out", photos / "a.png", "--no-detect")
    assert code == 2 and (photos / "a.png").read_bytes() == before
    assert err.count("\n") == 1 and "is one of the inputs" in err
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x,y,width,height\n")
    code, _, err = _cli(photos / "b.png", "--boxes", boxes, "--out", boxes)
    assert code == 2 and boxes.read_text() == "path,x,y,width,height\n" and "--boxes" in err


def test_rows_are_on_disk_before_a_crash(tmp_path):
    """Case 4: a segfault while reading the third file keeps the first two files' rows."""
    for name in ("a.png", "b.png", "c.png", "d.png"):
        cv2.imwrite(str(tmp_path / name), _face(len(name)))
    out = tmp_path / "p.csv"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from bregflax import safe_io
        from bregflax.inference import predict
        from bregflax.inference import predict
        from bregflax.data import media
        read = media.read_image
        def crashing(path):
            if str(path).endswith("c.png"):
                os.kill(os.getpid(), signal.SIGSEGV)
            return read(path)
        media.read_image = crashing
        sys.exit(predict.main([{str(tmp_path)!r}, "--no-detect", "--out", {str(out)!r},
                               "--no-progress"]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert run.returncode == -11, run.stderr.decode()[-2000:]  # it did crash
    rows = list(csv.DictReader(open(out)))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "b.png"]
    assert [r["status"] for r in rows] == ["ok", "ok"]


# --------------------------------------------------------------------------- sizes (4, 5)


def _flat_png(path, width, height, value=128):
    """A one-colour gray PNG written row by row: a 20000 x 20000 one is 0.4 MB on disk."""
    row = b"\x00" + bytes([value]) * width
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def test_flat_png_writer_makes_a_valid_image(tmp_path):
    image = cv2.imread(str(_flat_png(tmp_path / "f.png", 70, 30, 99)), cv2.IMREAD_UNCHANGED)
    assert image.shape == (30, 70) and (image == 99).all()


@pytest.mark.slow
def test_20000_pixel_image_is_detected_on_without_crashing(tmp_path):
    """Case 4: a 20000 x 20000 photo (it used to segfault OpenCV's Haar detector); taken
    whole (--no-detect), its 20000-pixel crop window is cut at reduced resolution."""
    _flat_png(tmp_path / "big.png", 20000, 20000)
    cv2.imwrite(str(tmp_path / "small.png"), np.full((100, 100), 128, np.uint8))
    code, out, err = _cli(tmp_path / "big.png", tmp_path / "small.png", "--format", "jsonl")
    assert code == 0, err
    assert [(os.path.basename(r["path"]), r["status"]) for r in _jsonl(out)] == [
        ("big.png", "no_face"),
        ("small.png", "no_face"),
    ]
    code, out, err = _cli(tmp_path / "big.png", tmp_path / "small.png", "--no-detect",
                          "--format", "jsonl")  # fmt: skip
    big, small = _jsonl(out)
    assert code == 0 and big["box"] == [0, 0, 20000, 20000]
    assert big["probs"] == pytest.approx(small["probs"], abs=1e-5)  # the same flat gray face


def test_huge_user_box_is_an_error_row_and_the_other_rows_are_kept(tmp_path):
    """Case 5: a 1e7-pixel --boxes box is refused before any crop is allocated."""
    cv2.imwrite(str(tmp_path / "a.png"), _face(0))
    cv2.imwrite(str(tmp_path / "b.png"), _face(1))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x,y,width,height\na.png,0,0,48,48\nb.png,0,0,1e7,1e7\n")
    code, out, err = _cli(tmp_path / "a.png", tmp_path / "b.png", "--boxes", boxes,
                          "--format", "jsonl")  # fmt: skip
    rows = _jsonl(out)
    assert code == 1 and [r["status"] for r in rows] == ["ok", "error"]
    assert rows[1]["error"].startswith("box_too_large") and "b.png" in err


# --------------------------------------------------------------------------- user errors (10, 13)


def _user_error_cases(tmp_path):
    no_height = tmp_path / "no_height.csv"
    no_height.write_text("path,x,y,width\na.png,1,2,3\n")
    short_row = tmp_path / "short_row.csv"
    short_row.write_text("path,x,y,width,height\na.png,1,2\n")
    read_only = "/sys/p.csv" if os.geteuid() == 0 else str(tmp_path / "ro" / "p.csv")
    return {
        "boxes missing column": (["--boxes", no_height], "height"),
        "boxes short row": (["--boxes", short_row], "short_row.csv:2"),
        "boxes is a folder": (["--boxes", tmp_path], "folder"),
        "boxes missing": (["--boxes", tmp_path / "nope.csv"], "nope.csv"),
        "out in missing folder": (["--out", tmp_path / "nope" / "p.csv"], "does not exist"),
        "out read-only": (["--out", read_only], "cannot write"),
        "out is a folder": (["--out", tmp_path], "folder"),
        "annotate read-only": (["--annotate", read_only.rsplit("/", 1)[0]], "cannot write in"),
        "annotate is a file": (["--annotate", tmp_path / "a.png"], "needs a folder"),
        "margin nan": (["--margin", "nan"], "--margin"),
        "margin huge": (["--margin", "1e9"], "--margin"),
        "margin negative": (["--margin=-2"], "--margin"),
        "min-face nan": (["--min-face", "nan"], "--min-face"),
        "min-face zero": (["--min-face", "0"], "--min-face"),
        "every zero": (["--every", "0"], "--every"),
        "redetect-every zero": (["--redetect-every", "0"], "--redetect-every"),
        "batch-size zero": (["--batch-size", "0"], "--batch-size"),
        "model unknown": (["--model", "nope"], "nope"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "boxes missing column",
        "boxes short row",
        "boxes is a folder",
        "boxes missing",
        "out in missing folder",
        "out read-only",
        "out is a folder",
        "annotate read-only",
        "annotate is a file",
        "margin nan",
        "margin huge",
        "margin negative",
        "min-face nan",
        "min-face zero",
        "every zero",
        "redetect-every zero",
        "batch-size zero",
        "model unknown",
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, case):
    """Cases 10 and 13: what is wrong and what to do, in one line, exit 2, no traceback."""
    cv2.imwrite(str(tmp_path / "a.png"), _face(0))
    if "read-only" in case and os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
    args, needle = _user_error_cases(tmp_path)[case]
    code, out, err = _cli(tmp_path / "a.png", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("bregflax predict: error: "), err
    assert needle in err and "Traceback" not in err


def test_verbose_adds_the_traceback(tmp_path):
    code, _, err = _cli(tmp_path, "--boxes", tmp_path, "--verbose")
    assert (
        code == 2
        and "Traceback" in err
        and err.rstrip().splitlines()[-1].startswith("bregflax predict: error: ")
    )


def test_annotating_pgm_and_extensionless_inputs(tmp_path):
    """Case 10: annotations of inputs OpenCV cannot write back in their own format are PNGs,
    and a file that cannot be annotated gets an error row while the next files still run."""
    cv2.imwrite(str(tmp_path / "x.pgm"), _face(0))
    cv2.imwrite(str(tmp_path / "noext.png"), _face(1))
    os.rename(tmp_path / "noext.png", tmp_path / "noext")
    cv2.imwrite(str(tmp_path / "z.png"), _face(2))
    ann = tmp_path / "ann"
    inputs = [tmp_path / "x.pgm", tmp_path / "noext", tmp_path / "z.png"]
    code, out, err = _cli(*inputs, "--annotate", ann, "--no-detect", "--format", "jsonl")
    assert code == 0, err
    rows = _jsonl(out)
    assert [r["status"] for r in rows] == ["ok"] * 3
    written = [Path(r["annotation"]) for r in rows]
    assert written == [ann / "x.pgm.png", ann / "noext.png", ann / "z.png"]
    assert all(cv2.imread(str(p)) is not None for p in written)


def test_an_annotation_that_cannot_be_written_is_that_rows_error(tmp_path, monkeypatch):
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), _face(0))
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.png").mkdir()  # a folder where the first annotation would go
    publish = safe_io.publish_new

    def full_disk_once(path, data):
        if path.name == "a.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return publish(path, data)

    monkeypatch.setattr(safe_io, "publish_new", full_disk_once)
    code, out, err = _cli(tmp_path / "a.png", tmp_path / "b.png", "--annotate",
                          tmp_path / "ann", "--no-detect", "--format", "jsonl")  # fmt: skip
    rows = _jsonl(out)
    assert code == 1 and [r["status"] for r in rows] == ["error", "ok"]
    assert "annotation" in rows[0]["error"] and "label" in rows[0]  # the prediction is kept
    assert "no space left" in rows[0]["error"]
    assert (tmp_path / "ann" / "b.png").is_file()


# --------------------------------------------------------------------------- boxes (14, 17)


def test_boxes_paths_are_relative_to_the_csv_and_unmatched_rows_are_reported(tmp_path, monkeypatch):
    """Case 14: --boxes paths are taken from the CSV's folder, wherever predict runs; rows
    that match no input are counted and named; inputs without a row are no_face unless
    --boxes-fallback."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "meta").mkdir()
    (tmp_path / "elsewhere").mkdir()
    image = np.full((100, 100), 90, np.uint8)
    image[20:68, 30:78] = _face(1)
    cv2.imwrite(str(tmp_path / "photos" / "p.png"), image)
    cv2.imwrite(str(tmp_path / "photos" / "q.png"), _face(2))
    boxes = tmp_path / "meta" / "boxes.csv"
    boxes.write_text(
        "path,x,y,width,height\n../photos/p.png,30,20,48,48\n../photos/gone.png,1,1,9,9\n"
    )
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = _cli(tmp_path / "photos", "--boxes", boxes, "--format", "jsonl")
    rows = {os.path.basename(r["path"]): r for r in _jsonl(out)}
    assert code == 0
    assert rows["p.png"]["status"] == "ok" and rows["p.png"]["box"] == [30, 20, 48, 48]
    assert rows["q.png"]["status"] == "no_face" and rows["q.png"]["source"] == "user"
    assert "1 --boxes row(s) matched no frame read" in err and "boxes.csv:3" in err
    assert "gone.png" in err and "--boxes-fallback" in err
    code, out, _ = _cli(tmp_path / "photos", "--boxes", boxes, "--boxes-fallback", "--no-detect",
                        "--format", "jsonl")  # fmt: skip
    rows = {os.path.basename(r["path"]): r for r in _jsonl(out)}
    assert rows["q.png"]["status"] == "ok" and rows["q.png"]["source"] == "full_image"


def test_boxes_csv_with_a_byte_order_mark(tmp_path):
    """Case 17: a UTF-8 BOM (as Excel writes) before the header is accepted."""
    cv2.imwrite(str(tmp_path / "p.png"), _face(0))
    boxes = tmp_path / "boxes.csv"
    boxes.write_bytes("\ufeffpath,x,y,width,height\np.png,0,0,48,48\n".encode())
    code, out, err = _cli(tmp_path / "p.png", "--boxes", boxes, "--format", "jsonl")
    assert code == 0, err
    assert [(r["status"], r["source"]) for r in _jsonl(out)] == [("ok", "user")]


# --------------------------------------------------------------------------- media (15, 16, 18)


def test_truncated_video_names_its_missing_frames(tmp_path):
    """Case 15: a video cut in half decodes only some of the 30 frames its header gives."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for k in range(30):
        writer.write(cv2.cvtColor(cv2.resize(_face(k), (64, 64)), cv2.COLOR_GRAY2BGR))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    capture, read = cv2.VideoCapture(str(path)), 0
    while capture.grab():
        read += 1
    assert 0 < read < 30  # what OpenCV gets out of the first half
    code, out, err = _cli(path, "--no-detect", "--every", "5", "--format", "jsonl")
    rows = _jsonl(out)
    assert code == 0
    assert [r["frame"] for r in rows if r["status"] == "ok"] == list(range(0, read, 5))
    (warning,) = [r for r in rows if r["status"] == "warning"]
    assert (
        f"frames {read}-29 missing" in warning["error"] and "of the 30 frames" in warning["error"]
    )
    assert f"frames {read}-29" in err


def test_gif_and_symlinked_folder_inside_a_folder(tmp_path):
    """Case 16: a GIF in a folder is read like a GIF named directly; a symlinked sub-folder
    is searched, and a link back up is named in the summary instead of looping."""
    from PIL import Image

    folder, other = tmp_path / "in", tmp_path / "other"
    folder.mkdir()
    other.mkdir()
    Image.fromarray(_face(0)).save(folder / "g.gif")
    cv2.imwrite(str(other / "o.png"), _face(1))
    (folder / "linked").symlink_to(other, target_is_directory=True)
    (other / "loop").symlink_to(tmp_path, target_is_directory=True)
    direct = _cli(folder / "g.gif", "--no-detect", "--format", "jsonl")[1]
    code, out, err = _cli(folder, "--no-detect", "--format", "jsonl")
    rows = _jsonl(out)
    assert code == 0, err
    got = [(os.path.relpath(r["path"], folder), r["status"]) for r in rows]
    assert ("g.gif", "ok") in got and ("linked/o.png", "ok") in got
    gif = next(r for r in rows if r["path"].endswith("g.gif"))
    assert gif["probs"] == _jsonl(direct)[0]["probs"]
    assert "loop" in err and "already searched" in err


def test_the_same_file_twice_is_processed_once_and_said_so(tmp_path):
    """Case 18: `a.png a.png` and `folder folder/a.png` give one row and one count."""
    cv2.imwrite(str(tmp_path / "a.png"), _face(0))
    for args in ([tmp_path / "a.png", tmp_path / "a.png"], [tmp_path, tmp_path / "a.png"]):
        code, out, err = _cli(*args, "--no-detect", "--format", "jsonl")
        assert code == 0
        assert [r["status"] for r in _jsonl(out)] == ["ok", "skipped"]
        assert "1 file(s), 1 frame(s)" in err and "processed once" in err
