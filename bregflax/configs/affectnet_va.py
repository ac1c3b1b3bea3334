"""BReGNet39 on AffectNet, dimensional: valence and arousal in [-1, 1], MSE loss."""

from bregflax.configs import affectnet


def get_config():
    config = affectnet.get_config()
    config.data.source = "affectnet_va"
    config.model.head = "va"
    config.loss.weighted = False
    config.best_metric = "val/va_rmse"
    config.best_mode = "min"
    return config
