"""One flag style with the other spelling as an alias, help with defaults, help before jax."""

import argparse
import os
import subprocess
import sys

import pytest

from bregflax import cli, flags, main
from bregflax.configs import experiment
from bregflax.evaluation import evaluate
from bregflax.inference import export, predict
from bregflax.paper import reproduce
from bregflax.training import xla_cpu


def test_normalize_spells_every_flag_with_dashes_and_leaves_the_rest():
    argv = ["--report_only", "--data_dir=/a_b/c_d", "--config.data.data_dir=x_y", "--set",
            "num_epochs=1", "photo_1.png", "-h", "--", "--not_a_flag"]  # fmt: skip
    assert flags.normalize(argv) == [
        "--report-only", "--data-dir=/a_b/c_d", "--config.data.data_dir=x_y", "--set",
        "num_epochs=1", "photo_1.png", "-h", "--", "--not_a_flag"]  # fmt: skip


def _parsers():
    return {
        "train": main.parser(),
        "evaluate": evaluate.parser(),
        "predict": predict.parser(),
        "reproduce": flags.reproduce_parser(),
        "export": flags.export_parser(),
    }


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_is_dashed_has_help_and_takes_both_spellings(command):
    parser = _parsers()[command]
    for action in parser._actions:
        for option in action.option_strings:
            assert "_" not in option, (command, option)  # one style: dashes
        if action.option_strings:
            assert action.help, (command, action.option_strings)  # every option explained
    formatter = parser._get_formatter()
    for action in parser._actions:  # each default is stated in the help
        if action.option_strings and action.default not in (None, False, "", [], "==SUPPRESS=="):
            assert "default" in formatter._get_help_string(action), action.option_strings
    parser.format_help()  # the help renders (no stray % in the text)
    options = [o for a in parser._actions for o in a.option_strings if "-" in o[2:]]
    for option in options:  # the underscore spelling is the same flag
        assert flags.normalize(["--" + option[2:].replace("-", "_")]) == [option]


def test_both_spellings_parse_the_same():
    a = reproduce.parse_args(["--table=2", "--workdir=w", "--report_only", "--data_dir=d"])
    b = reproduce.parse_args(["--table=2", "--workdir=w", "--report-only", "--data-dir=d"])
    assert vars(a) == vars(b) and a.report_only and a.data_dir == "d"
    p = predict.parse_args(["x.png", "--min_face", "30", "--no_detect", "--batch_size=8"])
    q = predict.parse_args(["x.png", "--min-face", "30", "--no-detect", "--batch-size=8"])
    assert vars(p) == vars(q) and p.min_face == 30 and p.no_detect and p.batch_size == 8
    e = export.parse_args(["--model=fer2013", "--out=m.bin"])
    assert e.platforms == "cpu,cuda,tpu"
    t = main.parser().parse_args(["--config=demo", "--workdir=w", "--num_processes=2"])
    assert t.num_processes == 2


def test_static_copies_match_the_experiment_grid():
    assert flags.TABLES == experiment.TABLES
    assert flags.SCALES == experiment.FIELDS["scale"]
    assert flags.CLAIMS == tuple(c.name for c in experiment.CLAIMS)


def test_a_bad_flag_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        flags.export_parser().parse_args(["--model=x", "--out=y", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--help" in err


def _run(*args):
    env = {**os.environ, xla_cpu.OPT_OUT: "0"}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_version():
    import bregflax

    result = _run("-m", "bregflax.cli", "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"bregflax {bregflax.__version__}"


def test_help_answers_before_jax_is_imported():
    """`bregflax --help` and every `bregflax COMMAND --help` print their help without
    importing jax (what made them take seconds)."""
    code = (
        "import sys\n"
        "from bregflax import cli\n"
        "for argv in [['--help']] + [[c, '--help'] for c in cli.COMMANDS]:\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "    assert 'jax' not in sys.modules, argv\n"
        "print('no jax')\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.rstrip().endswith("no jax")
    for command in cli.COMMANDS:
        assert f"usage: bregflax {command}" in result.stdout


def test_formatter_states_defaults_once():
    p = flags.Parser(prog="x")
    p.add_argument("--a", default=3, help="a number")
    p.add_argument("--b", default=4, help="b (default: four)")
    text = " ".join(p.format_help().split())
    assert "a number (default: 3)" in text and "b (default: four)" in text
    assert isinstance(p, argparse.ArgumentParser)
