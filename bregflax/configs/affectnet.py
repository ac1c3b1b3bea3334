"""BReGNet39 on AffectNet, 8-class categorical (expression codes 0-7), weighted loss."""

from bregflax.configs import default


def get_config():
    config = default.get_config()
    config.data.source = "affectnet"
    config.data.image_size = 64
    config.data.channels = 3
    config.model.num_classes = 8
    config.loss.weighted = True
    return config
