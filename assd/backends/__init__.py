"""Model backends: each implements the ``assd.model.ASARM`` protocol and knows nothing of sampling."""

from .engine import XLNetEngine
from .toy import ToyASARM
from .xlnet_reference import XLNetReference

__all__ = ["ToyASARM", "XLNetEngine", "XLNetReference"]
