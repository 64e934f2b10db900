"""One CUDA graph capture at a time per process.

PyTorch captures through one shared capture stream, so two threads capturing at once corrupt
each other's graphs. Every capture in the library (the engine's cached calls, the samplers'
whole rounds) holds this lock, and captures in "thread_local" error mode, so that other
threads' sessions keep running (and syncing) on their own streams meanwhile.
"""

from __future__ import annotations

import threading

CAPTURE_LOCK = threading.RLock()
