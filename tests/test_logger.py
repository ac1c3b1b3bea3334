"""The training bar: one bar over every step of the run, its rate after compilation."""

import time

import ml_collections

from bregflax.training.logger import MetricLogger


def test_the_bar_spans_the_run_and_its_clock_starts_after_the_compiled_step(tmp_path):
    config = ml_collections.ConfigDict({"progress_bar": True})
    logger = MetricLogger(tmp_path, config, total_steps=600, initial_step=100)  # resumed
    bar = logger._bar
    assert (bar.total, bar.n) == (600, 100)  # all epochs' steps, from where it resumes
    time.sleep(0.5)  # the first step compiles
    logger.compiled(101)
    assert bar.n == 101 and bar.format_dict["elapsed"] < 0.4  # compile time left out
    time.sleep(0.05)
    logger.advance(111)
    info = bar.format_dict
    rate = (info["n"] - info["initial"]) / info["elapsed"]
    assert info["n"] == 111 and rate > 10 / 0.4  # 10 steps in ~0.05 s, not in 0.55 s
    logger.close()
