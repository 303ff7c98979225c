"""``minicnn.model.Sequential``: the class lives with the layers (:mod:`minicnn.layers.sequential`),
since residual blocks are made of Sequentials."""
from .layers.sequential import Sequential

__all__ = ["Sequential"]
