"""Every config: what configs/*.py load, a smoke run on synthetic data, the full-size models."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from bregflax import configs
from bregflax.configs import experiment
from bregflax.nn import models
from bregflax.training import state, train

# The table configs take a parameter string; ``test`` is their tiniest scale.
ARGS = {name: "test" for name in configs.TABLE_CONFIGS}


def test_there_are_configs(repo_root):
    assert {"default", "demo", "fer2013", "affectnet", "affectnet_va", "aff_wild"} <= set(
        configs.NAMES
    )
    assert set(configs.TABLE_CONFIGS) == {"table1", "table2", "table3", "table4", "table5", "fig5"}
    files = {p.stem for p in (repo_root / "configs").glob("*.py")} - {"__init__"}
    assert files == set(configs.NAMES), "a configs/NAME.py file for every packaged config"


@pytest.mark.parametrize("name", configs.NAMES)
def test_the_top_level_file_is_the_packaged_config(name, repo_root):
    arg = ARGS.get(name)
    spec = str(repo_root / "configs" / f"{name}.py") + (f":{arg}" if arg else "")
    assert configs.load_file(spec).to_dict() == configs.get(name, arg).to_dict()


@pytest.fixture
def quick_compile():
    """XLA compiles with most optimizations off: these runs check that a config runs, not
    its numbers, and compiling is nearly all of their time."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.mark.parametrize("name", configs.NAMES)
def test_config_smoke_runs_on_synthetic_data(name, shrink, quick_compile, tmp_path):
    """Two steps and a validation of each config's head, loss, schedule and best metric,
    with its model cut to one stage of one block of width 8 (the full-size models are
    checked below without running them)."""
    config = shrink(
        configs.get(name, ARGS.get(name)),
        max_steps=2,
        batch_size=8,
        eval_batch_size=16,
        **{
            "data.synthetic.num_train": 32,
            "data.synthetic.num_val": 16,
            "model.stage_sizes": (1,),
            "model.widths": (8,),
        },
    )
    train.train_and_evaluate(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert any(config.best_metric in r for r in records)


# The full-size models' parameter counts (README's model table).
FULL_SIZE = {
    "default": ("BReGNet39", 5.07e6),
    "fer2013": ("BReGNet39", 5.07e6),
    "affectnet": ("BReGNet39", 5.07e6),
    "affectnet_va": ("BReGNet39", 5.07e6),
    "aff_wild": ("BReGNet39", 5.07e6),
    "fer2013_small": ("BReGNetSmall", 0.70e6),
    "demo": ("BReGNetTiny", 78e3),
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_models_build_with_their_parameter_counts(name):
    config = configs.get(name)
    model = state.build_model(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(state.input_shape(config)))
    expected_name, count = FULL_SIZE[name]
    assert config.model.name == expected_name
    assert models.num_params(shapes["params"]) == pytest.approx(count, rel=0.01)
    outputs = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False),
        shapes,
        jnp.zeros((2,) + state.input_shape(config)[1:]),
    )
    if config.model.head in ("classes", "both"):
        assert outputs["logits"].shape == (2, config.model.num_classes)
    if config.model.head in ("va", "both"):
        assert outputs["va"].shape == (2, 2)


@pytest.mark.parametrize(
    "name, arg, model, shortcut, weighted, source",
    [
        ("table1", "h1,weighted,affectnet", "BReGNet39", "h1", True, "affectnet"),
        ("table1", "weighted,h2,fer2013,cpu", "BReGNetSmall", "h2", True, "fer2013"),
        ("table2", "resnet,regular,fer2013", "ResNet110", "identity", False, "fer2013"),
        ("table2", "resnet,fer2013,cpu,seed=2", "ResNetSmall", "identity", False, "fer2013"),
        ("table3", "affectnet", "BReGNet39", "h3", True, "affectnet"),
        ("table4", "fer2013", "BReGNet39", "h3", False, "fer2013"),
        ("table5", "resnet,aff_wild", "ResNet110", "identity", False, "aff_wild"),
    ],
)
def test_parameter_strings(name, arg, model, shortcut, weighted, source):
    config = configs.get(name, arg)
    assert config.model.name == model
    assert config.model.shortcut == shortcut
    assert config.loss.weighted is weighted
    assert config.data.source == source
    assert config.seed == (2 if "seed=2" in arg else 0)


def test_cpu_scale_pair_differs_only_in_the_shortcut():
    def model_fields(arg):
        config = configs.get("table2", arg)
        m = dict(models.MODELS.get(config.model.name).keywords)
        m.pop("shortcut", None)
        return m, config.optim.to_dict(), config.num_epochs

    assert model_fields("bregnet,cpu") == model_fields("resnet,cpu")


def test_depth_and_run_names():
    config = configs.get("fig5", "fer2013,cpu,depth=21")
    assert tuple(config.model.stage_sizes) == (3, 3, 3)
    assert experiment.run_name(config) == "fer2013_BReGNetSmall_d21_h3_regular_seed0"
    base = configs.get("table2", "bregnet,regular,fer2013,cpu")
    assert experiment.run_name(base) == "fer2013_BReGNetSmall_h3_regular_seed0"
    same = configs.get("table1", "h3,regular,fer2013,cpu")
    assert same.to_dict() == base.to_dict()  # tables I and II share this run


@pytest.mark.parametrize("arg", ["h4", "seed", "lr=3", "depth=10", "bregnet,fer2013,cpu,depth=8"])
def test_bad_parameter_strings_raise(arg):
    with pytest.raises(ValueError):
        configs.get("fig5", arg)


@pytest.mark.parametrize("name", configs.NAMES)
def test_every_packaged_config_is_one_a_run_can_use(name):
    configs.validate(configs.get(name, ARGS.get(name)))


def test_validate_checks_what_a_config_has(demo_config):
    configs.validate(ml_collections.ConfigDict({"data": {"image_size": 12}}))
    demo_config.model.head = "va"  # demo's best_metric, val/accuracy, is not logged then
    with pytest.raises(configs.ConfigError, match="'val/accuracy' is not logged by a 'va' head"):
        configs.validate(demo_config)
    demo_config.best_metric = "val/va_rmse"
    configs.validate(demo_config)
    with pytest.raises(configs.ConfigError, match="config.num_epochs must be at least 1, got '3'"):
        configs.validate(ml_collections.ConfigDict({"num_epochs": "3"}))


@pytest.mark.parametrize("spec", ["demo", "demo.py", "configs/demo.py", "fer2013_small"])
def test_configs_by_name_from_any_folder(spec, tmp_path, monkeypatch):
    """A name (or the README's configs/NAME.py where no such file is) is the package's config."""
    monkeypatch.chdir(tmp_path)  # outside the repository: no configs/ folder here
    name = spec.split("/")[-1].removesuffix(".py")
    assert configs.load_file(spec).to_dict() == configs.get(name).to_dict()


def test_a_config_file_path_still_wins_and_unknown_names_list_the_known(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.py").write_text(
        "from bregflax.configs.demo import get_config as base\n"
        "def get_config():\n    c = base()\n    c.num_epochs = 1\n    return c\n"
    )
    assert configs.load_file("configs/demo.py").num_epochs == 1  # the file, not the package
    assert configs.load_file("table2:resnet,fer2013,test").model.shortcut == "identity"
    with pytest.raises(configs.ConfigError, match="configs by name: demo, fer2013"):
        configs.load_file("nope")
