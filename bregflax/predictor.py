"""Kept at its old name: the module is ``bregflax.inference.predictor``."""

from bregflax.inference.predictor import *  # noqa: F403
