"""Run untrusted programs (model completions + unit tests) in a separate, limited process.

Each program gets a fresh ``python -I`` in its own temporary directory and process group, with
CPU-time, address-space, file-size and process-count limits set before exec, a minimal
environment (no proxies, no user site), sockets disabled by a prelude, and, where the kernel
allows unprivileged namespaces, no network at all (``unshare -rn``). Nothing of the program
runs in the evaluator's process; a wall-clock timeout kills the whole process group.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

# Runs inside the sandboxed interpreter before the program: no sockets, then the program as __main__.
PRELUDE = """\
import socket, sys, runpy
def _no_network(*a, **k):
    raise OSError("network access is disabled in the sandbox")
socket.socket = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
sys.argv = ["program.py"]
runpy.run_path("program.py", run_name="__main__")
"""


@dataclass
class SandboxResult:
    """status: passed | failed (non-zero exit) | timeout | memory (MemoryError / killed by limit)."""

    status: str
    returncode: int | None
    seconds: float
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def unshare_prefix() -> tuple[str, ...]:
    """``("unshare", "-rn")`` when an unprivileged network namespace works here, else ()."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    try:
        r = subprocess.run(
            [exe, "-rn", sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return (exe, "-rn") if r.returncode == 0 else ()


def _limits(timeout: float, memory_mb: int):
    def apply():  # runs in the child between fork and exec
        import resource

        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _env(tmp: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": tmp,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
    }


def run_program(
    program: str, timeout: float = 10.0, memory_mb: int = 1024, network: bool = False
) -> SandboxResult:
    """Execute ``program`` as a script in a sandbox; ``passed`` iff it exits 0 within the limits."""
    if not isinstance(program, str):
        raise TypeError(f"program must be a str, got {type(program).__name__}")
    if timeout <= 0 or memory_mb < 64:
        raise ValueError("timeout must be > 0 seconds and memory_mb >= 64")
    prefix = () if network else unshare_prefix()
    with tempfile.TemporaryDirectory(prefix="assd-sandbox-") as tmp:
        with open(os.path.join(tmp, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        cmd = [*prefix, sys.executable, "-I", "-c", PRELUDE]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=_env(tmp), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_limits(timeout, memory_mb), start_new_session=True,
        )  # fmt: skip
        try:
            _, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            _, err = proc.communicate()
            timed_out = True
        finally:
            _kill_group(proc)  # leftover children of a finished program
        secs = time.perf_counter() - t0
    err_text = err.decode("utf-8", "replace")[-2000:]
    rc = proc.returncode
    if timed_out or rc == -signal.SIGXCPU:
        status = "timeout"
    elif "MemoryError" in err_text:
        status = "memory"
    else:
        status = "passed" if rc == 0 else "failed"
    return SandboxResult(status, rc, secs, err_text)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_many(programs: list[str], workers: int = 2, **kw) -> list[SandboxResult]:
    """Run programs concurrently (one process each); results in input order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda p: run_program(p, **kw), programs))


def humaneval_program(problem: dict, completion: str) -> str:
    """The HumanEval-infilling check program: prompt + completion + suffix, tests, check(entry)."""
    return (
        problem["prompt"] + completion + problem["suffix"] + "\n" + problem["test"] + "\n"
        + f"check({problem['entry_point']})\n"
    )  # fmt: skip
