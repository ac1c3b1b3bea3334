"""Kept at its old name: the module is ``bregflax.evaluation.evaluate``."""

import runpy

if __name__ == "__main__":
    runpy.run_module("bregflax.evaluation.evaluate", run_name="__main__", alter_sys=True)
else:
    from bregflax.evaluation.evaluate import *  # noqa: F403
