"""assd: any-subset autoregressive models with exact any-subset speculative decoding."""

from .infill import Infilled, infill
from .likelihood import log_likelihood
from .loading import Loaded, load
from .model import ASARM, Batch, Session, make_batch
from .orders import order_from_mask, order_with_masked_order, random_order, random_subset_order
from .samplers import (
    ASSD,
    MeanField,
    RoundEvent,
    RoundTrace,
    SampleResult,
    Sequential,
    fastest,
    generate,
    sample,
)  # fmt: skip

__version__ = "0.1.0"

__all__ = [
    "ASARM", "Batch", "Session", "make_batch", "load", "Loaded", "log_likelihood",
    "order_from_mask", "order_with_masked_order", "random_order", "random_subset_order",
    "ASSD", "MeanField", "Sequential", "RoundEvent", "RoundTrace", "SampleResult",
    "generate", "sample", "fastest", "infill", "Infilled",
]  # fmt: skip
