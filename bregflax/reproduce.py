"""Kept at its old name: the module is ``bregflax.paper.reproduce``."""

import runpy

if __name__ == "__main__":
    runpy.run_module("bregflax.paper.reproduce", run_name="__main__", alter_sys=True)
else:
    from bregflax.paper.reproduce import *  # noqa: F403
