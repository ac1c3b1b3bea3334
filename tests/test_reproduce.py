"""``bregflax reproduce`` at the tiny test scale: tables, resumption, missing datasets."""

import json

import pytest

from bregflax import reproduce


@pytest.fixture(scope="module")
def table2(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("repro")
    logs = []
    out = reproduce.reproduce("2", "test", workdir, seeds=(0,), repeats=5, only="fer2013,regular",
                              log=logs.append)  # fmt: skip
    return workdir, out, logs


def test_table_has_ours_beside_the_papers(table2):
    workdir, out, logs = table2
    assert out == workdir / "table2.md" and out.exists()
    text = out.read_text()
    assert "paper" in text.lower() and "ours" in text.lower()
    assert "0.6949" in text  # the paper's FER2013 figure for BReG-Net
    runs = sorted(p.parent.name for p in (workdir / "test").glob("*/result.json"))
    assert len(runs) == 2 and all(r.startswith("fer2013_") for r in runs)
    assert sum(line.startswith("  train:") for line in logs) == 2
    result = json.loads((workdir / "test" / runs[0] / "result.json").read_text())
    assert 0 <= result["scores"]["categorical"]["accuracy"] <= 1
    assert result["params"] > 0 and result["seconds_per_epoch"] > 0


def test_finished_runs_are_skipped(table2):
    workdir, _, _ = table2
    stamps = {p: p.stat().st_mtime for p in (workdir / "test").glob("*/result.json")}
    logs = []
    reproduce.reproduce("2", "test", workdir, seeds=(0,), repeats=5, only="fer2013,regular",
                        log=logs.append)  # fmt: skip
    assert sum("skip (finished)" in line for line in logs) == 2
    assert not any(line.startswith("  train:") for line in logs)
    assert {p: p.stat().st_mtime for p in stamps} == stamps


def test_other_tables_reuse_the_same_runs(table2):
    workdir, _, _ = table2
    logs = []
    for table in ("timing", "fig6", "4"):
        out = reproduce.reproduce(table, "test", workdir, repeats=5, only="fer2013,regular",
                                  log=logs.append)  # fmt: skip
        assert "No experiment" not in out.read_text()
    assert not any(line.startswith("  train:") for line in logs)
    assert "seconds" in (workdir / "timing.md").read_text().lower()
    assert (workdir / "fig6.png").read_bytes()[:4] == b"\x89PNG"


def test_depth_sweep_trains_only_the_new_depth(table2):
    workdir, _, _ = table2
    logs = []
    out = reproduce.reproduce("fig5", "test", workdir, repeats=5, only="fer2013",
                              log=logs.append)  # fmt: skip
    assert [line for line in logs if line.startswith("  train:")] == [
        "  train: fer2013_BReGNetTiny_d15_h3_regular_seed0"
    ]
    assert "| 9 |" in out.read_text() and "| 15 |" in out.read_text()
    assert (workdir / "fig5.png").exists()


def test_a_changed_config_is_not_silently_reused(table2):
    workdir, _, _ = table2
    with pytest.raises(ValueError, match="different config"):
        reproduce.reproduce("2", "test", workdir, repeats=5, only="fer2013,bregnet,regular",
                            overrides={"num_epochs": 3}, log=lambda _: None)  # fmt: skip


def test_missing_dataset_is_skipped_with_a_message(tmp_path):
    logs = []
    out = reproduce.reproduce(
        "2", "cpu", tmp_path, only="fer2013,bregnet,regular",
        overrides={"data.data_dir": str(tmp_path / "empty")}, log=logs.append,
    )  # fmt: skip
    text = "\n".join(logs)
    assert "skip fer2013: not prepared" in text and "fer2013" in out.read_text()
    assert not list(tmp_path.glob("cpu/*/checkpoints"))


def test_command_line_parsing():
    args = reproduce.parse_args(["--table=fig5", "--workdir=w", "--set", "progress_bar=False"])
    assert args.table == "fig5" and args.scale == "cpu"
    assert reproduce.parse_overrides(args.set) == {"progress_bar": "False"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        reproduce.parse_overrides(["progress_bar"])
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--table=8", "--workdir=w"])


def test_overrides_cast_to_the_field_type():
    config = reproduce.load_config("table2.py", "fer2013,test")
    reproduce._set(config, "progress_bar", "False")
    reproduce._set(config, "num_epochs", "3")
    assert config.progress_bar is False and config.num_epochs == 3
    with pytest.raises(ValueError):
        reproduce._set(config, "progress_bar", "maybe")
