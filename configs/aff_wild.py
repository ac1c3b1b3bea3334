"""BReGNet39 on Aff-Wild, dimensional: per-frame valence and arousal, MSE loss.

For `--config=configs/aff_wild.py`; the config itself is `bregflax/configs/aff_wild.py`.
"""

from bregflax.configs.aff_wild import get_config  # noqa: F401
