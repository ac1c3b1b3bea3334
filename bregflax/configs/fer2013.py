"""BReGNet39 on FER2013 (7 classes), the paper's settings: SGD, lr 0.01, weighted loss."""

from bregflax.configs import default


def get_config():
    config = default.get_config()
    config.data.source = "fer2013"
    config.loss.weighted = True
    return config
