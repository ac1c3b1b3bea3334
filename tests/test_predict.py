"""The ``bregflax predict`` command line: files, folders, videos, boxes, formats, exit codes."""

import csv
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import cv2
import numpy as np
import pytest

from bregflax.data import FER2013_CLASSES, synthetic
from bregflax.inference import predict
from bregflax.inference.predict import csv_columns
from bregflax.inference.predictor import Predictor


def _face(seed=0):
    """A face-like gray image of the synthetic set, 48 x 48."""
    return synthetic.make_faces(3, seed=1)["image"][seed % 3, ..., 0]


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "sub" / "crop.png"), _face(0))
    cv2.imwrite(str(folder / "blank.png"), np.full((120, 160), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image")
    video = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(12):
        video.write(cv2.cvtColor(cv2.resize(_face(i % 3), (64, 64)), cv2.COLOR_GRAY2BGR))
    video.release()
    return folder


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = predict.main([*map(str, args), "--no-progress"])
    return code, out.getvalue(), err.getvalue()


def test_cli_csv_reports_every_file(inputs, tmp_path):
    code, _, err = _cli(inputs, "--no-detect", "--every", "4", "--out", tmp_path / "p.csv")
    assert code == 1  # the broken file
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert list(rows[0]) == csv_columns(FER2013_CLASSES, False)
    by_status = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(r)
    assert [r["path"].endswith("broken.jpg") for r in by_status["error"]] == [True]
    assert [r["path"].endswith("notes.txt") for r in by_status["skipped"]] == [True]
    video = [r for r in by_status["ok"] if r["path"].endswith("clip.avi")]
    assert [int(r["frame"]) for r in video] == [0, 4, 8]
    assert [float(r["time_s"]) for r in video] == [0.0, 0.4, 0.8]
    assert len(by_status["ok"]) == 5  # crop, blank (whole image), three video frames
    for r in by_status["ok"]:
        probs = [float(r[f"p_{n}"]) for n in FER2013_CLASSES]
        assert abs(sum(probs) - 1) < 1e-4 and r["label"] == FER2013_CLASSES[int(r["label_index"])]
    assert "broken.jpg: cannot decode image" in err and "notes.txt" in err


def test_cli_detection_reports_no_face_and_annotates(inputs, tmp_path):
    code, out, err = _cli(inputs / "blank.png", "--annotate", tmp_path / "ann", "--format", "jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in rows] == ["no_face"]
    assert "--no-detect" not in err  # a 160x120 photo does not look like a face crop
    assert (tmp_path / "ann" / "blank.png").exists()
    assert f"annotated copies: {tmp_path / 'ann'}/" in err


def test_the_summary_says_what_was_found_and_where_the_rows_are(tmp_path):
    tally = predict.Tally(files=1)
    for label in ("Sad", "Happy", "Sad"):
        tally.add({"path": "a.png", "frame": None, "status": "ok", "label": label})
    text = predict.closing(str(tmp_path / "p.json"), "json", None, tally)
    assert text.splitlines() == [
        "faces by label: Sad 2, Happy 1",
        f"rows: {tmp_path / 'p.json'} (one JSON document, one row per face)",
        "next: add --annotate DIR to draw each face's box and label on a copy",
    ]


def test_the_no_detect_hint_only_when_most_frames_look_like_crops(tmp_path):
    for i in range(3):  # 48x48 face crops the cascade finds no face in
        cv2.imwrite(str(tmp_path / f"crop{i}.png"), np.full((48, 48), 100 + i, np.uint8))
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((480, 640), 128, np.uint8))
    code, _, err = _cli(tmp_path, "--out", tmp_path / "p1.csv")
    assert code == 0 and "pass --no-detect" in err  # 3 of 4 frames look like crops
    for i in range(3, 8):
        cv2.imwrite(str(tmp_path / f"photo{i}.png"), np.full((480, 640), 90, np.uint8))
    code, _, err = _cli(tmp_path, "--out", tmp_path / "p2.csv")
    assert code == 0 and "--no-detect" not in err  # 3 of 9


def test_json_out_is_one_document_and_jsonl_one_row_per_line(inputs, tmp_path):
    for suffix in (".json", ".jsonl"):
        out = tmp_path / f"p{suffix}"
        code, _, err = _cli(inputs / "sub", "--no-detect", "--out", out)
        assert code == 0
        if suffix == ".json":
            rows = json.loads(out.read_text())  # json.load reads it
            assert "one JSON document" in err
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            assert "JSON Lines" in err
        assert [r["status"] for r in rows] == ["ok"] and rows[0]["label"] in FER2013_CLASSES
    empty = io.StringIO()
    writer = predict.Writer(empty, "json", [])
    writer.close()
    assert json.loads(empty.getvalue()) == []
    assert predict.format_of("a.JSON") == "json" and predict.format_of(None) == "csv"


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize(
    "no_progress, out, stdout_tty, stderr_tty, shown",
    [
        (False, None, True, True, False),  # rows on the terminal: the bar would mix with them
        (False, None, False, True, True),  # rows piped away: the bar on the terminal
        (False, "p.csv", True, True, True),
        (False, "p.csv", True, False, False),  # stderr is a file: no bar in it
        (True, "p.csv", True, True, False),
    ],
)
def test_progress_never_mixes_with_rows_on_stdout(no_progress, out, stdout_tty, stderr_tty, shown):
    stdout, stderr = _Stream(stdout_tty), _Stream(stderr_tty)
    assert predict.show_progress(no_progress, out, stdout, stderr) is shown


def test_progress_counts_video_frames(inputs):
    from bregflax.data import media
    from bregflax.inference.frames import expected_frames

    entries = {e.path.name: e for e in media.collect([inputs])}
    assert expected_frames(entries["clip.avi"], 1) == 12
    assert expected_frames(entries["clip.avi"], 5) == 3
    assert expected_frames(entries["blank.png"], 5) == 1
    assert expected_frames(entries["notes.txt"], 1) == 0


def test_cli_user_boxes(inputs, tmp_path):
    image = np.full((100, 200), 90, np.uint8)
    image[20:68, 120:168] = _face(1)
    cv2.imwrite(str(tmp_path / "photo.png"), image)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(
        f"path,x,y,width,height\n{tmp_path / 'photo.png'},120,20,48,48\n"
        f"{tmp_path / 'photo.png'},500,500,10,10\n"
    )
    code, out, _ = _cli(
        tmp_path / "photo.png", "--boxes", boxes, "--margin", "0", "--format", "jsonl"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "error"] and code == 1
    assert rows[0]["source"] == "user" and rows[0]["box"] == [120, 20, 48, 48]
    assert "box_outside_image" in rows[1]["error"]
    direct = Predictor.from_pretrained().predict([_face(1)])["probs"][0]
    got = np.array([rows[0]["probs"][n] for n in FER2013_CLASSES])
    np.testing.assert_allclose(got, direct, atol=1e-5)


def test_cli_argument_errors(tmp_path):
    assert _cli(tmp_path, "--every", "0")[0] == 2
    assert _cli(tmp_path, "--model", "nope")[0] == 2
    bad = tmp_path / "b.csv"
    bad.write_text("file,x\n")
    code, _, err = _cli(tmp_path, "--boxes", bad)
    assert code == 2 and "needs columns" in err


def test_cli_workdir_uses_the_runs_checkpoint(trained_run, tmp_path):
    cv2.imwrite(str(tmp_path / "face.png"), _face(2))
    out = tmp_path / "p.csv"
    code, _, err = _cli(
        tmp_path / "face.png",
        "--workdir",
        trained_run,
        "--checkpoint",
        "6",
        "--no-detect",
        "--out",
        out,
    )
    assert code == 0 and "1 face(s) classified" in err
    (row,) = csv.DictReader(open(out))
    assert list(row) == csv_columns(FER2013_CLASSES, has_va=True)
    want = Predictor.from_workdir(trained_run, "6").predict([_face(2)])
    got = [float(row[f"p_{n}"]) for n in FER2013_CLASSES]
    np.testing.assert_allclose(got, want["probs"][0], atol=1e-5)
    assert float(row["valence"]) == pytest.approx(float(want["valence"][0]), abs=1e-5)
    assert float(row["arousal"]) == pytest.approx(float(want["arousal"][0]), abs=1e-5)


def test_help_states_the_rules():
    code, out, _ = _cli("--help")
    text = " ".join(out.split())
    assert code == 0
    for rule in (
        "Nothing is written over an input",
        "a crash loses at most the file being processed",
        "Paths in the CSV are relative to the CSV's folder",
        "A frame with no row in it has no face (a no_face row) unless --boxes-fallback",
        "fraction of the box added on each side, 0 to 1",
        "2 a usage error, told in one line (--verbose adds the traceback)",
        "640x480 frame is searched at 427x320 by YuNet and at 320x240 by the cascade",
        "may be found up to K-1 frames late",
    ):
        assert rule in text


def test_tally_and_writers(tmp_path):
    rows = [
        {"path": "a.png", "frame": None, "time_s": None, "status": "no_face", "error": ""},
        {"path": "v.mp4", "frame": 3, "time_s": 0.12345, "face": 0, "box": [1, 2, 3, 4]}
        | {"source": "detector", "status": "ok", "error": "", "label": "B", "label_index": 1}
        | {"probs": {"A": 0.25, "B": 0.75}},
        {"path": "n.txt", "frame": None, "time_s": None, "status": "skipped", "error": "no"},
    ]
    tally = predict.Tally(files=2)
    for row in rows:
        tally.add(row)
    assert not tally.failed
    assert tally.summary().splitlines() == [
        "2 file(s), 2 frame(s): 1 face(s) classified, 1 frame(s) with no face, 1 problem(s)",
        "  skipped: n.txt: no",
    ]  # a.png cannot be read, so it does not look like a face crop: no --no-detect hint
    tally.add({"path": "v.mp4", "frame": None, "status": "warning", "error": "frames 9-11 missing"})
    assert not tally.failed and tally.summary().splitlines()[0].startswith("2 file(s), 2 frame(s)")
    assert "  warning: v.mp4: frames 9-11 missing" in tally.summary().splitlines()
    tally.add({"path": "b.jpg", "frame": None, "status": "error", "error": "cannot decode"})
    assert tally.failed
    out = io.StringIO()
    writer = predict.Writer(out, "csv", csv_columns(("A", "B"), has_va=False))
    writer.write(rows[1])
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    with open(tmp_path / "p.jsonl", "w") as f:  # each row reaches the file as it is written
        predict.Writer(f, "jsonl", []).write(rows[0])
        assert json.loads((tmp_path / "p.jsonl").read_text()) == rows[0]
    assert row == {
        "path": "v.mp4",
        "frame": "3",
        "time_s": "0.123",
        "face": "0",
        "x": "1",
        "y": "2",
        "width": "3",
        "height": "4",
        "source": "detector",
        "label": "B",
        "label_index": "1",
        "p_A": "0.25",
        "p_B": "0.75",
        "status": "ok",
        "error": "",
    }
