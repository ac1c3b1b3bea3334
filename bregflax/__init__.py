"""bregflax: BReG-Net (bounded residual gradient networks) for facial affect, in JAX/Flax."""

__version__ = "0.1.0"
