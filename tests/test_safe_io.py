"""Issue 27: nothing a user owns is lost, nothing hostile crashes a run.

Unit tests of :mod:`bregflax.safe_io` first, then each hostile case against the command that
met it: ``predict`` (annotations, ``--out``, names, values, signals, resources), ``export``,
``reproduce`` and ``evaluate`` (files cut off by a kill, outputs onto inputs).
"""

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import cv2
import ml_collections
import numpy as np
import pytest

from bregflax import hostile, rundir, safe_io
from bregflax.data import media, synthetic
from bregflax.evaluation import evaluate
from bregflax.inference import export, predict
from bregflax.paper import reproduce


def _face(seed=0):
    return cv2.resize(synthetic.make_faces(3, seed=1)["image"][seed % 3, ..., 0], (96, 96))


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = predict.main([*map(str, args), "--no-progress"])
    return code, out.getvalue(), err.getvalue()


def _no_nan(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("a.png", "b.png")):
        cv2.imwrite(str(folder / name), _face(i))
    return folder


# --------------------------------------------------------------------------- safe_io


def test_write_atomic_leaves_the_old_file_whole_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text('{"old": 1}\n')

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        safe_io.write_atomic(path, '{"new": 2}\n')
    assert path.read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temp left


def test_files_get_the_usual_mode_and_a_replaced_file_keeps_its_own(tmp_path):
    mask = os.umask(0o22)
    try:
        new = safe_io.write_atomic(tmp_path / "new.json", "{}")
        published = safe_io.publish_new(tmp_path / "copy.png", b"png")
        assert new.stat().st_mode & 0o777 == published.stat().st_mode & 0o777 == 0o644
        os.chmod(new, 0o640)
        safe_io.write_atomic(new, "[]")
        assert new.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)


def test_write_atomic_replaces_a_link_not_its_target(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    (tmp_path / "out.json").symlink_to(outside)
    safe_io.write_atomic(tmp_path / "out.json", "{}")
    assert outside.read_text() == "mine" and not (tmp_path / "out.json").is_symlink()
    with pytest.raises(ValueError, match="is an input"):
        safe_io.write_atomic(tmp_path / "sub" / ".." / "outside.txt", "x", protect=[outside])


def test_publish_new_never_replaces_or_follows_anything(tmp_path):
    (tmp_path / "a.png").write_bytes(b"user")
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"target")
    (tmp_path / "b.png").symlink_to(target)
    (tmp_path / "c.png").symlink_to(tmp_path / "dangling")
    (tmp_path / "d.png").mkdir()
    got = [safe_io.publish_new(tmp_path / n, n.encode()) for n in ("a.png", "b.png", "c.png")]
    got.append(safe_io.publish_new(tmp_path / "d.png", b"d"))
    assert [p.name for p in got] == ["a-2.png", "b-2.png", "c-2.png", "d-2.png"]
    assert (tmp_path / "a.png").read_bytes() == b"user" and target.read_bytes() == b"target"
    assert not (tmp_path / "dangling").exists()
    assert [p.read_bytes() for p in got] == [b"a.png", b"b.png", b"c.png", b"d"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_safe_folder_takes_no_link_out_of_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "ann"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    folder, renamed = safe_io.safe_folder(root, Path("sub/deeper"))
    assert folder == root / "sub-2" / "deeper" and renamed and not list(outside.iterdir())


def test_strict_json_writes_null_and_says_why():
    row = {"probs": {"happy": float("nan"), "sad": 0.5}, "va": np.array([np.inf]), "error": ""}
    back = _no_nan(hostile.strict_json(row, reason_key="error"))
    assert back["probs"] == {"happy": None, "sad": 0.5} and back["va"] == [None]
    assert "probs.happy=nan" in back["error"] and "va[0]=inf" in back["error"]


@pytest.mark.parametrize(
    "name", [b"caf\xe9.png", b"\xff\xfe.jpg", b"ok-\xc3\xa9.png", b"back\\x41\x80.png"]
)
def test_names_that_are_not_utf8_round_trip_through_text(name):
    text = hostile.text_path(os.fsdecode(name))
    text.encode("utf-8")  # writable as UTF-8
    if b"\\x" not in name:  # a literal backslash-x in a bad name is the one ambiguity
        assert os.fsencode(hostile.path_from_text(text)) == name


def test_read_json_names_a_cut_file_and_what_to_do(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"config": {"a": 1}, "scores": {"acc')
    with pytest.raises(hostile.DamagedFileError, match=r"result.json is not valid JSON .*rerun"):
        hostile.read_json(path)


def test_check_size_refuses_before_reading(tmp_path):
    path = tmp_path / "big.jpg"
    with open(path, "wb") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse
    with pytest.raises(hostile.FileTooLargeError, match=r"2.0 GiB, over the 256.0 MiB"):
        hostile.check_size(path, hostile.MAX_IMAGE_BYTES, "--max-file-size")


# --------------------------------------------------------------------------- annotations


def test_annotations_never_replace_a_file_or_follow_a_link_in_the_folder(photos, tmp_path):
    """An annotated copy whose name is taken by the user's file, a link to a file outside,
    a hard link to an input, or a link standing for a folder, gets a new name; the summary
    lists them and nothing outside the folder changes."""
    (photos / "sub").mkdir()
    cv2.imwrite(str(photos / "sub" / "c.png"), _face(2))
    ann, outside = tmp_path / "ann", tmp_path / "outside"
    ann.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (ann / "a.png").write_bytes(b"the user's own photo")
    (ann / "b.png").symlink_to(outside / "secret.png")
    (ann / "sub").symlink_to(outside)
    code, out, err = _cli(photos, "--annotate", ann, "--no-detect", "--format", "jsonl")
    assert code == 0, err
    rows = [_no_nan(line) for line in out.splitlines()]
    assert (ann / "a.png").read_bytes() == b"the user's own photo"
    assert (outside / "secret.png").read_bytes() == b"secret"
    assert sorted(os.listdir(outside)) == ["secret.png"]
    assert (ann / "b.png").is_symlink()
    written = [Path(r["annotation"]) for r in rows]
    assert written == [ann / "a-2.png", ann / "b-2.png", ann / "sub-2" / "c.png"]
    assert all(cv2.imread(str(p)) is not None for p in written)
    assert "3 annotation(s) renamed" in err and "a-2.png" in err


def test_an_annotation_onto_a_hard_link_of_an_input_leaves_the_input(photos, tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    os.link(photos / "a.png", ann / "a.png")  # the same file as an input, by another route
    before = (photos / "a.png").read_bytes()
    code, out, err = _cli(photos / "a.png", "--annotate", ann, "--no-detect")
    assert code == 0, err
    assert (photos / "a.png").read_bytes() == before and (ann / "a-2.png").is_file()


# --------------------------------------------------------------------------- --out


def test_out_onto_an_input_by_any_route_or_through_a_link_is_refused(photos, tmp_path):
    before = (photos / "a.png").read_bytes()
    os.link(photos / "a.png", tmp_path / "hard.csv")
    (tmp_path / "soft.csv").symlink_to(tmp_path / "elsewhere.csv")
    for out in (tmp_path / "hard.csv", photos / "sub" / ".." / "a.png", tmp_path / "soft.csv"):
        code, _, err = _cli(photos, "--out", out, "--no-detect")
        assert code == 2 and err.count("\n") == 1, err
    assert (photos / "a.png").read_bytes() == before
    assert not (tmp_path / "elsewhere.csv").exists()
    (tmp_path / "notes.csv").write_text("my own notes\n")
    code, _, err = _cli(photos, "--out", tmp_path / "notes.csv", "--no-detect")
    assert code == 2 and "not an earlier bregflax predict output" in err
    assert (tmp_path / "notes.csv").read_text() == "my own notes\n"


def test_a_second_writer_on_the_same_out_is_refused_naming_the_first(photos, tmp_path):
    out = tmp_path / "p.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from bregflax import safe_io
            lock = safe_io.OutputLock({str(out)!r}).__enter__()
            open({str(out)!r}, "w").write("path,frame,time_s,face\\na.png,,,0\\n")
            print("held", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = _cli(photos, "--out", out, "--no-detect")
        assert code == 2 and err.count("\n") == 1
        assert f"pid {holder.pid}" in err and "being written by another process" in err
        assert out.read_text() == "path,frame,time_s,face\na.png,,,0\n"  # untouched
    finally:
        holder.kill()
        holder.wait()
    code, _, err = _cli(photos, "--out", out, "--no-detect")  # the lock ended with it
    assert code == 0, err
    assert len(list(csv.DictReader(open(out)))) == 2 and not list(tmp_path.glob(".p.csv.lock"))


def test_names_that_are_not_utf8_are_written_and_read_back(tmp_path):
    """A file named with bytes that are not UTF-8 gets its rows (and so do the files after
    it), in CSV and JSON lines that parse, and its name reads back to the same bytes."""
    folder = tmp_path / "in"
    folder.mkdir()
    bad = os.fsdecode(b"caf\xe9-\xff.png")
    cv2.imencode(".png", _face(0))[1].tofile(str(folder / bad))
    cv2.imwrite(str(folder / "z.png"), _face(1))
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"p.{fmt}"
        code, _, err = _cli(folder, "--no-detect", "--out", out, "--annotate", tmp_path / fmt)
        assert code == 0, err
        text = out.read_text(encoding="utf-8")  # strict UTF-8
        rows = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else [
            _no_nan(line) for line in text.splitlines()
        ]  # fmt: skip
        assert [r["status"] for r in rows] == ["ok", "ok"]
        name = os.fsencode(hostile.path_from_text(rows[0]["path"]))
        assert name == os.fsencode(str(folder / bad))
        assert os.path.isfile(name)
        annotation = os.fsencode(hostile.path_from_text(rows[0]["annotation"]))
        assert os.path.isfile(annotation) and b"\xe9-\xff" in annotation
    try:
        import pandas
    except ImportError:  # not a dependency: checked where it is installed
        return
    assert len(pandas.read_csv(tmp_path / "p.csv")) == 2


def test_values_that_are_not_finite_are_null_with_a_reason(photos, tmp_path, monkeypatch):
    real = predict.Predictor.predict_faces

    def nan_outputs(self, faces):
        out = real(self, faces)
        out["probs"] = np.full_like(out["probs"], np.nan)
        return out

    monkeypatch.setattr(predict.Predictor, "predict_faces", nan_outputs)
    code, out, err = _cli(photos, "--no-detect", "--format", "jsonl")
    rows = [_no_nan(line) for line in out.splitlines()]  # strict JSON
    assert all(v is None for r in rows for v in r["probs"].values())
    assert all("not finite" in r["error"] for r in rows)
    code, out, err = _cli(photos, "--no-detect")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert all(r["p_Happy"] == "" and "not finite" in r["error"] for r in rows)


# --------------------------------------------------------------------------- resources


def _predict_process(args, **kwargs):
    command = [sys.executable, "-m", "bregflax.inference.predict", *map(str, args), "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_out_on_a_full_disk_is_one_line(photos):
    run = _predict_process([photos, "--no-detect", "--out", "/dev/full"])
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "no space left" in run.stderr


@pytest.mark.slow
def test_training_that_meets_a_file_size_limit_says_so_in_one_line_and_resumes(
    run_main, tiny_args, tmp_path
):
    """A checkpoint save cut by a 40 KiB file size limit: exit 2 and one line, none of the
    writer threads' tracebacks, no checkpoint under a final name that is not whole; the same
    command then resumes and trains to the end."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "bregflax.main", "--config=configs/demo.py"]
    command += [f"--workdir={tmp_path}", *tiny_args]
    shell = "ulimit -f 40; exec " + " ".join(repr(str(c)) for c in command)
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(
        ["bash", "-c", shell], capture_output=True, text=True, timeout=300, env=env, cwd=root
    )
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    cache = [k for k, line in enumerate(lines) if "persistent compilation cache" in line]
    others = [line for k, line in enumerate(lines) if k not in cache and k - 1 not in cache]
    assert "Traceback" not in run.stderr and len(others) == 1, run.stderr[-3000:]
    assert "file too large" in others[0] and "resume" in others[0]  # (jax's own warnings aside)
    saved = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == []  # the cut save stays under orbax's temporary name
    assert run_main(tmp_path).returncode == 0
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())


def test_a_file_size_limit_leaves_only_whole_rows(photos, tmp_path):
    for i in range(6):
        cv2.imwrite(str(photos / f"more{i}.png"), _face(i))
    out = tmp_path / "p.jsonl"
    command = [
        sys.executable,
        "-m",
        "bregflax.inference.predict",
        photos,
        "--no-detect",
        "--out",
        out,
    ]
    shell = "ulimit -f 1; exec " + " ".join(repr(str(c)) for c in command) + " --no-progress"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # 1 KiB: no cache file either
    run = subprocess.run(
        ["bash", "-c", shell], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]  # (before it, JAX's own cache warning)
    assert "Traceback" not in run.stderr and "cannot write --out" in last
    assert "file size limit" in last
    text = out.read_text()
    assert text.endswith("\n") and len(text) <= 1024
    rows = [_no_nan(line) for line in text.splitlines()]  # no torn row
    assert 0 < len(rows) < 8 and f"first {len(rows)} file(s)" in run.stderr


def test_a_closed_pipe_is_one_line(photos):
    for i in range(20):
        cv2.imwrite(str(photos / f"more{i:02d}.png"), _face(i))
    command = [sys.executable, "-m", "bregflax.inference.predict", str(photos), "--no-detect"]
    shell = " ".join(map(repr, command)) + " --no-progress | head -2"
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=300
    )
    assert len(run.stdout.splitlines()) == 2
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "closed the pipe" in run.stderr


def test_a_2_gib_jpg_is_refused_unread_and_the_limit_can_be_raised(photos, monkeypatch):
    with open(photos / "huge.jpg", "wb") as f:
        f.truncate(2 << 30)
    read = media.read_image
    monkeypatch.setattr(
        media, "read_image", lambda p: pytest.fail("read") if "huge" in str(p) else read(p)
    )
    code, out, err = _cli(photos, "--no-detect", "--format", "jsonl")
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and rows["huge.jpg"]["status"] == "error"
    assert "over the 256.0 MiB limit (raise it with --max-file-size)" in rows["huge.jpg"]["error"]
    assert rows["a.png"]["status"] == rows["b.png"]["status"] == "ok"
    code, out, _ = _cli(photos / "a.png", "--no-detect", "--max-file-size", "0.001")
    assert code == 1 and "over the" in out
    assert _cli(photos / "a.png", "--no-detect", "--max-file-size", "1")[0] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_predicting_exits_130_or_143_with_the_rows_so_far(photos, tmp_path, signum):
    for i in range(8):
        cv2.imwrite(str(photos / f"more{i}.png"), _face(i))
    out = tmp_path / "p.csv"
    script = textwrap.dedent(f"""
        import sys, time
        from bregflax.inference import predict
        from bregflax.data import media
        read = media.read_image
        def slow(path):
            time.sleep(0.5)
            return read(path)
        media.read_image = slow
        sys.exit(predict.main([{str(photos)!r}, "--no-detect", "--out", {str(out)!r},
                               "--no-progress"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(out.read_text().splitlines() if out.exists() else []) < 3:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "interrupted" in err
    rows = list(csv.DictReader(open(out)))
    assert len(rows) >= 2 and all(r["status"] == "ok" for r in rows)
    assert not list(tmp_path.glob(".p.csv.lock"))


# --------------------------------------------------------------------------- export


def test_export_never_replaces_a_file_of_the_run_or_one_not_an_export(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": {}}\n')
    (tmp_path / "notes.txt").write_text("mine")
    cases = {
        str(run / "config.json"): "a file of the run",
        str(run / ".." / "run" / "config.json"): "a file of the run",
        str(tmp_path / "notes.txt"): "not a bregflax export",
        str(tmp_path / "missing" / "model.bin"): "does not exist",
    }
    for out, message in cases.items():
        assert export.main(["--workdir", str(run), "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (run / "config.json").read_text() == '{"model": {}}\n'
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert export.main(["--model", "fer2013", "--out", str(tmp_path / "nope" / "m.bin")]) == 2
    assert not (tmp_path / "nope").exists()


def test_export_into_an_earlier_export_replaces_it(tmp_path, monkeypatch):
    path = tmp_path / "model.bin"
    path.write_bytes(export.runtime.MAGIC + b"old")
    assert export.check_out(path, None) == path


# --------------------------------------------------------------------------- runs


def test_a_cut_result_json_is_named_in_one_line(tmp_path):
    """A result.json cut off by a kill: reproduce (and --report_only) name it and say what
    to do, instead of a JSON traceback naming no file."""
    run = tmp_path / "cpu" / "run"
    run.mkdir(parents=True)
    (run / "result.json").write_text('{"config": {"model": {"na')
    with pytest.raises(hostile.DamagedFileError, match=r"run/result.json is not valid JSON"):
        reproduce.run_experiment(ml_collections.ConfigDict({"a": 1}), run, 1, log=lambda *_: 0)
    (run / "result.json").unlink()
    (run / "config.json").write_text('{"model": ')
    with pytest.raises(hostile.DamagedFileError, match=r"run/config.json .*delete it"):
        reproduce.run_experiment(ml_collections.ConfigDict({"a": 1}), run, 1, log=lambda *_: 0)


def test_result_json_is_strict_and_written_atomically(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(safe_io, "write_atomic", lambda p, d, **k: written.append((p, d)))
    reproduce._save_result(tmp_path, {"scores": {"auc": float("nan")}, "wall": math.inf})
    ((path, text),) = written
    back = _no_nan(text)
    assert path == tmp_path / "result.json" and back["scores"]["auc"] is None
    assert "scores.auc=nan" in back["nonfinite"]


def test_config_json_is_written_atomically(tmp_path, monkeypatch):
    rundir.write_config(tmp_path, ml_collections.ConfigDict({"a": 1}))

    def fail(*_):
        raise OSError(27, "File too large")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        rundir.write_config(tmp_path, ml_collections.ConfigDict({"a": 2}))
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_evaluate_reports_never_land_on_a_file_of_the_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="a file of the run"):
        evaluate.check_outputs(tmp_path, tmp_path, "config")
    evaluate.check_outputs(tmp_path, tmp_path / "eval", "config")  # elsewhere: fine


# --------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("signum,delay", [(signal.SIGINT, 0.5), (signal.SIGTERM, 2.0)])
def test_a_signal_while_training_compiles_exits_cleanly_and_resumes(
    run_main, tmp_path, signum, delay
):
    """Ctrl-C or SIGTERM soon after the run starts (building data, compiling the first step)
    ends with 130 or 143 and one line, never a segmentation fault; the same command then
    trains to the end."""
    proc = run_main(tmp_path, wait=False)
    deadline = time.time() + 300
    while not (tmp_path / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    text = out.decode(errors="replace")
    assert proc.returncode == 128 + signum, text[-3000:]
    assert "Traceback" not in text and "interrupted" in text and "resume" in text
    assert not (tmp_path / "run.lock").exists()
    assert run_main(tmp_path).returncode == 0


def test_a_video_whose_name_is_not_utf8_is_read(tmp_path):
    plain = tmp_path / "plain.avi"
    writer = cv2.VideoWriter(str(plain), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for k in range(4):
        writer.write(cv2.cvtColor(_face(k), cv2.COLOR_GRAY2BGR))
    writer.release()
    bad = tmp_path / os.fsdecode(b"clip-\xff.avi")
    os.rename(plain, bad)
    code, out, err = _cli(bad, "--no-detect", "--format", "jsonl")
    rows = [_no_nan(line) for line in out.splitlines()]
    assert code == 0, err
    assert [(r["frame"], r["status"]) for r in rows] == [(k, "ok") for k in range(4)]
    assert rows[0]["path"].endswith("clip-\\xff.avi")


def test_readme_and_help_say_a_config_file_is_python_that_runs():
    from bregflax import main

    text = " ".join(main.parser().format_help().split())
    assert "A config file is Python and is run as it is loaded" in text
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "**A config file is Python, and it runs.**" in readme
