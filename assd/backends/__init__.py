"""Model backends: each implements the ``assd.model.ASARM`` protocol and knows nothing of sampling."""

from .toy import ToyASARM
from .xlnet_reference import XLNetReference

__all__ = ["ToyASARM", "XLNetReference"]
