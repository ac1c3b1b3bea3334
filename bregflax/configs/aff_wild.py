"""BReGNet39 on Aff-Wild, dimensional: per-frame valence and arousal, MSE loss."""

from bregflax.configs import affectnet_va


def get_config():
    config = affectnet_va.get_config()
    config.data.source = "aff_wild"
    return config
