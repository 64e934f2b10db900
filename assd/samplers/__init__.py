"""Exact samplers over the ``assd.model`` protocol (they know nothing of XLNet)."""

from .auto import CalibrationCancelled, fastest
from .many import sample_many
from .result import RoundTrace, SampleResult
from .run import RoundEvent, Sampler, generate, rounds, sample
from .sequential import MeanField, Sequential
from .speculative import ASSD

__all__ = [
    "ASSD",
    "MeanField",
    "Sequential",
    "Sampler",
    "RoundEvent",
    "RoundTrace",
    "SampleResult",
    "generate",
    "rounds",
    "sample",
    "sample_many",
    "fastest",
    "CalibrationCancelled",
]
