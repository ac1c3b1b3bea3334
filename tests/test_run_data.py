"""A run remembers its data: data.json, read back by evaluate and predict --workdir."""

import json

import pytest

from bregflax import configs
from bregflax import data as data_lib
from bregflax.data import run_data


@pytest.fixture
def fer2013_config():
    config = configs.get("fer2013_small")
    config.data.data_dir = ""
    return config


def test_record_resolves_the_directory_the_run_read(tmp_path, monkeypatch, fer2013_config):
    monkeypatch.setenv(run_data.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    path = run_data.record(tmp_path, fer2013_config.data)
    recorded = json.loads(path.read_text())
    assert recorded == {"source": "fer2013", "data_dir": str(tmp_path / "data"),
                        "version": "1.0.0"}  # fmt: skip
    assert run_data.read(tmp_path) == recorded and run_data.read(tmp_path / "none") == {}
    assert run_data.describe(configs.get("demo").data) == {"source": "synthetic"}


def test_apply_uses_the_recorded_directory_unless_told_otherwise(
    tmp_path, monkeypatch, fer2013_config
):
    monkeypatch.setenv(run_data.DATA_DIR_ENV, str(tmp_path / "data"))
    run_data.record(tmp_path, fer2013_config.data)
    monkeypatch.delenv(run_data.DATA_DIR_ENV)  # a new shell
    config = configs.get("fer2013_small")
    config.data.data_dir = ""
    config.lock()
    assert run_data.apply(config, tmp_path) == []
    assert config.data.data_dir == str(tmp_path / "data")
    run_data.apply(config, tmp_path, data_dir=str(tmp_path / "elsewhere"))  # --data-dir wins
    assert config.data.data_dir == str(tmp_path / "elsewhere")
    (tmp_path / run_data.FILENAME).write_text(json.dumps({"source": "fer2013", "version": "0.9"}))
    assert "version 0.9" in run_data.apply(config, tmp_path)[0]


def test_arrays_folders_are_recorded_absolute(tmp_path, monkeypatch):
    config = configs.get("default")
    config.data.source = "arrays"
    (tmp_path / "arr").mkdir()
    monkeypatch.chdir(tmp_path)
    config.data.arrays.dir = "arr"
    run_data.record(tmp_path, config.data)
    monkeypatch.chdir(tmp_path / "arr")  # from another folder the relative path is wrong
    assert run_data.apply(config, tmp_path) == []
    assert config.data.arrays.dir == str(tmp_path / "arr")


def test_the_not_prepared_message_names_every_way_to_the_data(tmp_path, fer2013_config):
    fer2013_config.data.data_dir = str(tmp_path)
    with pytest.raises(data_lib.DatasetNotFoundError) as e:
        data_lib.load("fer2013", "train", fer2013_config.data)
    for way in ("$BREGFLAX_DATA_DIR", "--data-dir", "--config.data.data_dir", "data.json"):
        assert way in str(e.value)


def test_a_trained_run_records_its_data(trained_run):
    assert run_data.read(trained_run) == {"source": "synthetic"}
