"""Fig. 5: BReG-Net (H3) depth sweep, depth = 6n + 3, categorical and dimensional.
``--config=configs/fig5.py:depth=21,fer2013[,cpu]`` (``affectnet_va`` for the dimensional
curve). Widths stay those of the scale's BReG-Net; only the blocks per stage change.

For `--config=configs/fig5.py`; the config itself is `bregflax/configs/fig5.py`.
"""

from bregflax.configs.fig5 import get_config  # noqa: F401
