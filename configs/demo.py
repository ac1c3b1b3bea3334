"""The quick start: a tiny BReG-Net on the embedded synthetic faces, both heads, ~2 min.

For `--config=configs/demo.py`; the config itself is `bregflax/configs/demo.py`.
"""

from bregflax.configs.demo import get_config  # noqa: F401
