"""assd: any-subset autoregressive models with exact any-subset speculative decoding."""

from .infill import Infilled, infill
from .likelihood import log_likelihood
from .loading import Loaded, load
from .model import ASARM, Batch, Session, checked_batch, make_batch
from .orders import (
    ORDERS,
    explicit_order,
    n_visible,
    order_from_mask,
    order_with_masked_order,
    random_order,
    random_subset_order,
    shuffle_masked,
)
from .samplers import (
    ASSD,
    CalibrationCancelled,
    MeanField,
    RoundEvent,
    RoundTrace,
    SampleResult,
    Sequential,
    fastest,
    generate,
    sample,
    sample_many,
)

__version__ = "0.1.0"

__all__ = [
    # the model protocol and loading
    "ASARM",
    "Batch",
    "Session",
    "make_batch",
    "checked_batch",
    "load",
    "Loaded",
    # decoding orders
    "ORDERS",
    "n_visible",
    "order_from_mask",
    "explicit_order",
    "order_with_masked_order",
    "shuffle_masked",
    "random_order",
    "random_subset_order",
    # samplers and likelihood
    "ASSD",
    "MeanField",
    "Sequential",
    "RoundEvent",
    "RoundTrace",
    "SampleResult",
    "generate",
    "sample",
    "sample_many",
    "fastest",
    "CalibrationCancelled",
    "log_likelihood",
    # one-line infill
    "infill",
    "Infilled",
]
