"""Adversarial programs against ``evals.sandbox``: each asserts the verdict *and* containment.

A wrong program must never pass, whatever it does to end early or to reach outside; nothing
outside the sandbox may change; the evaluator keeps running with bounded memory and returns at
the deadline. Containment tests need bubblewrap (``.ci/run`` installs it) and are skipped, with
the reason, where the sandbox runs with reduced isolation.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from evals import sandbox
from evals.sandbox import BoundedBuffer, Job, humaneval_job, run_many, run_program

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "eval" / "humaneval_infilling"
ADD = {
    "task_id": "Toy/0/L0",
    "entry_point": "add",
    "prompt": "def add(a, b):\n",
    "canonical_solution": "    return a + b\n",
    "suffix": "",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}

needs_bwrap = pytest.mark.skipif(
    sandbox.isolation().reduced, reason=f"reduced isolation here: {sandbox.isolation().detail}"
)


def run_add(completion: str, **kw) -> sandbox.SandboxResult:
    return run_program(humaneval_job(ADD, completion), **kw)


def marker() -> str:
    """A unique ``sleep`` argument, to find a program's processes from the host."""
    return f"{4000 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"


def alive_with(mark: str) -> list[int]:
    """Host pids whose command line contains ``mark``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if mark.encode() in cmd and b"sleep" in cmd:
                out.append(int(d))
    return out


def gone(mark: str, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while alive_with(mark):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


# -- the verdict: pass means the tests completed -------------------------------------------------
def test_correct_and_wrong_programs():
    good = run_add(ADD["canonical_solution"])
    assert good.passed and good.status == "passed", good
    bad = run_add("    return a - b\n")
    assert bad.status == "failed" and "AssertionError" in bad.stderr
    syntax = run_add("    return a +\n")
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


EARLY_EXITS = {
    "os._exit(0) inside an expression": "    return __import__('os')._exit(0) or a - b\n",
    "sys.exit(0)": "    import sys\n    sys.exit(0)\n",
    "exit()": "    exit()\n",
    "quit() in the function": "    quit(0)\n",
    "raise SystemExit at module level": "    return a - b\nraise SystemExit\n",
    "raise SystemExit(0) at module level": "    return a - b\nraise SystemExit(0)\n",
    "excepthook calls os._exit(0)": (
        "    return a - b\nimport os, sys\nsys.excepthook = lambda *e: os._exit(0)\n"
    ),
    "atexit calls os._exit(0)": "    return a - b\nimport atexit, os\natexit.register(os._exit, 0)\n",
    "stdout closed": "    return a - b\nimport os\nos.close(1)\n",
}


@pytest.mark.parametrize("name", list(EARLY_EXITS))
def test_early_exits_fail(name):
    r = run_add(EARLY_EXITS[name])
    assert not r.passed, (name, r)
    assert r.status in ("early-exit", "failed"), (name, r)
    if name.startswith(
        ("os._exit", "sys.exit", "exit()", "quit", "raise SystemExit", "excepthook")
    ):
        assert r.status == "early-exit" and r.returncode == 0, (name, r)


def test_issue_example_on_the_real_benchmark():
    """The blank of HumanEval/0 filled with an os._exit(0) that fires before any assert."""
    f = SHARED / "HumanEval-SingleLineInfilling.jsonl.gz"
    if not f.exists():
        pytest.skip("shared data not available")
    from evals import data

    p = next(
        x
        for x in data.load_humaneval_infilling(None, f)
        if x["task_id"] == "SingleLineInfilling/HumanEval/0/L0"
    )
    hack = '    for idx, elem in enumerate(__import__("os")._exit(0) or numbers):\n'
    r = run_program(humaneval_job(p, hack))
    assert r.status == "early-exit" and not r.passed
    assert run_program(humaneval_job(p, p["canonical_solution"])).passed


def test_always_equal_object_is_flagged_not_passed():
    eq = '    return type("E", (), {"__eq__": lambda s, o: True})()\n'
    r = run_add(eq)
    assert r.status == "always-equal" and not r.passed
    nested = '    return [type("E", (), {"__eq__": lambda s, o: True})()]\n'
    p = {**ADD, "test": "def check(candidate):\n    assert candidate(2, 3) == [5]\n"}
    assert run_program(humaneval_job(p, nested)).status == "always-equal"
    # ordinary values that compare equal only to themselves are not flagged
    p = {**ADD, "test": "def check(candidate):\n    assert candidate(2, 3) == [5, {'a': (1,)}]\n"}
    ok = run_program(humaneval_job(p, "    return [a + b, {'a': (1,)}]\n"))
    assert ok.passed, ok


def test_sleeping_within_the_limit_passes():
    r = run_add("    import time\n    time.sleep(0.6)\n    return a + b\n", timeout=3.0)
    assert r.passed and 1.1 < r.seconds < 3.0, r


def test_endless_loop_times_out():
    t0 = time.monotonic()
    r = run_add("    while True:\n        pass\n", timeout=1.0)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - t0 < 3.0


def test_memory_bomb_is_stopped():
    r = run_add(
        "    x = []\n    while True:\n        x.append(bytearray(32 << 20))\n", memory_mb=256
    )
    assert r.status == "memory" and not r.passed


def test_default_timeout_is_the_reference_harness_3_seconds():
    import inspect

    assert sandbox.TIMEOUT == 3.0
    assert inspect.signature(run_program).parameters["timeout"].default == 3.0


def test_run_many_keeps_order():
    jobs = [humaneval_job(ADD, c) for c in ("    return a + b\n", "    return 0\n")]
    res = run_many([*jobs, "import sys; sys.exit(3)", "pass"], workers=2)
    assert [r.status for r in res] == ["passed", "failed", "failed", "passed"]


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="program must be a str"):
        run_program(Job(b"print(1)"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        run_program("pass", timeout=0)


def test_bounded_buffer_keeps_head_and_tail():
    b = BoundedBuffer(keep=10, tail=4)
    for chunk in (b"abcd", b"efgh", b"ijkl", b"mnop"):
        b.add(chunk)
    assert bytes(b.head) == b"abcdef" and bytes(b.tail) == b"mnop" and b.dropped == 6
    assert b.text() == "abcdef\n[... 6 bytes dropped ...]\nmnop"


# -- containment ---------------------------------------------------------------------------------
@needs_bwrap
def test_cannot_write_or_read_outside(tmp_path):
    target = tmp_path / "evil.txt"
    readme = ROOT / "README.md"
    before = hashlib.sha256(readme.read_bytes()).hexdigest()
    for attack in (
        f"    open({str(target)!r}, 'w').write('x')\n    return a - b\n",
        f"    open({str(readme)!r}, 'a').write('pwned')\n    return a - b\n",
        f"    import shutil\n    shutil.rmtree({str(tmp_path)!r})\n    return a - b\n",
    ):
        r = run_add(attack)
        assert not r.passed and r.status == "failed", r
        assert "Error" in r.stderr
    assert not target.exists() and tmp_path.exists()
    assert hashlib.sha256(readme.read_bytes()).hexdigest() == before
    for secret in ("/etc/shadow", "/etc/passwd", str(readme)):
        r = run_program(f"print(open({secret!r}).read())\n")
        assert r.status == "failed" and "FileNotFoundError" in r.stderr, (secret, r)
    ok = run_program(
        "open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n"
    )
    assert ok.passed, ok  # the private work directory is writable


@needs_bwrap
@pytest.mark.parametrize("via", ["socket", "_socket"])
def test_no_connection_to_a_local_listener(via):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.3)
    port = srv.getsockname()[1]
    if via == "socket":  # the prelude's patched module
        attack = f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), 2).send(b'x')\n"
    else:  # around the prelude: the C module directly
        attack = (
            f"    import _socket\n    s = _socket.socket()\n    s.settimeout(2)\n"
            f"    s.connect(('127.0.0.1', {port}))\n    s.send(b'x')\n"
        )
    try:
        r = run_add(attack + "    return a + b\n")
        assert not r.passed and r.status == "failed", r
        assert "Error" in r.stderr  # refused / unreachable / disabled
        with pytest.raises(TimeoutError):
            srv.accept()
    finally:
        srv.close()


@needs_bwrap
def test_cannot_signal_the_evaluator_or_other_processes():
    victim = subprocess.Popen(["sleep", "30"])
    try:
        attack = (
            "    import os, signal\n"
            f"    for pid in (os.getppid(), 1, {os.getpid()}, {victim.pid}):\n"
            "        try:\n            os.kill(pid, signal.SIGKILL)\n"
            "        except OSError:\n            pass\n"
            "    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n"
            "    return a - b\n"
        )
        r = run_add(attack)
        assert r.status == "failed" and not r.passed, r
        assert victim.poll() is None  # still running
        os.kill(os.getpid(), 0)  # and so are we
    finally:
        victim.kill()
        victim.wait()


@needs_bwrap
def test_cannot_read_the_evaluators_environment(monkeypatch):
    secret = "assd-" + secrets.token_hex(8)
    monkeypatch.setenv("ASSD_TEST_SECRET", secret)
    os.environ["ASSD_TEST_SECRET"] = secret
    prog = (
        "import os\nout = []\n"
        f"for pid in (os.getppid(), 1, {os.getpid()}, {os.getppid()}):\n"
        "    try:\n        out.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as e:\n        out.append(repr(e).encode())\n"
        "print(out)\nprint(dict(os.environ))\nraise SystemExit(1)\n"
    )
    r = run_program(prog)
    assert r.status == "failed"
    assert secret not in r.stdout and secret not in r.stderr
    assert "ASSD_TEST_SECRET" not in r.stdout


DAEMON = """\
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/sleep", ["sleep", "{mark}"])  # holds stdout and stderr open
    os._exit(0)
time.sleep(0.3)
{rest}
"""


@needs_bwrap
def test_double_fork_daemon_does_not_block_or_survive():
    mark = marker()
    t0 = time.monotonic()
    r = run_program(DAEMON.format(mark=mark, rest="raise SystemExit(1)"), timeout=3)
    assert r.status == "failed" and time.monotonic() - t0 < 2.5, r
    assert gone(mark)
    mark = marker()  # the main program loops: the run still ends at the deadline
    t0 = time.monotonic()
    r = run_program(DAEMON.format(mark=mark, rest="while True:\n    pass"), timeout=1.5)
    assert r.status == "timeout" and time.monotonic() - t0 < 3.5, r
    assert gone(mark)


@needs_bwrap
def test_fork_storm_is_bounded_and_cleaned_up():
    mark = marker()
    prog = (
        "import os\nn = 0\n"
        "for _ in range(200):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        f"    if pid == 0:\n        os.execv('/usr/bin/sleep', ['sleep', '{mark}'])\n"
        "    n += 1\n"
        "print('forked', n, flush=True)\n"
        "import time\ntime.sleep(0.5)\n"
    )
    r = run_program(prog, timeout=5, nproc=32)
    n = int(r.stdout.split("forked")[1].split()[0])
    assert n < 32 <= 200, r  # the process-count limit stopped the storm
    assert r.passed  # the program itself ended normally; its children did not outlive it
    assert gone(mark)


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.parametrize("fd", [1, 2])
def test_a_gigabyte_of_output_keeps_the_evaluator_small(fd):
    peak, stop = [_rss_mb()], threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(_rss_mb())
            time.sleep(0.02)

    base = peak[0]
    t = threading.Thread(target=watch)
    t.start()
    try:
        completion = (
            f"    import os\n    chunk = b'x' * (1 << 20)\n    for _ in range(1024):\n"
            f"        os.write({fd}, chunk)\n    return a + b\n"
        )
        p = {**ADD, "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
        r = run_program(humaneval_job(p, completion), timeout=60)
    finally:
        stop.set()
        t.join()
    assert r.passed, r  # the nonce after 1 GB of output is still seen
    assert max(peak) - base < 64, (base, max(peak))
    assert len(r.stdout) <= 2000 and len(r.stderr) <= 2000


def test_reduced_isolation_is_reported_and_still_judges(monkeypatch):
    real_which = sandbox.shutil.which
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name)
    )
    sandbox.isolation.cache_clear()
    try:
        iso = sandbox.isolation()
        assert iso.reduced and "bubblewrap" in iso.detail
        assert run_add(ADD["canonical_solution"]).status == "passed"
        assert run_add("    return a - b\n").status == "failed"
        assert run_add("    import os\n    os._exit(0)\n").status == "early-exit"
        net = run_add("    import socket\n    socket.create_connection(('127.0.0.1', 9))\n")
        assert net.status == "failed" and "disabled in the sandbox" in net.stderr
    finally:
        sandbox.isolation.cache_clear()


def test_a_program_killed_from_outside_fails_promptly():
    """SIGKILL of the sandboxed program by someone else ends the run at once, as a failure."""
    mark = marker()
    prog = f"import os\nos.execv('/usr/bin/sleep', ['sleep', '{mark}'])\n"
    out = {}
    t = threading.Thread(target=lambda: out.update(r=run_program(prog, timeout=10)))
    t.start()
    end = time.monotonic() + 5
    while not alive_with(mark) and time.monotonic() < end:
        time.sleep(0.05)
    (pid,) = alive_with(mark)
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=5)
    assert not t.is_alive() and not out["r"].passed and out["r"].seconds < 6


def test_rescore_replaces_the_verdicts_of_stored_completions():
    """evals/rescore_code.py: completions judged elsewhere are run again here; the stored
    verdicts (even a wrong "passed") are replaced by this sandbox's."""
    from evals.rescore_code import rescore

    records = [
        {"id": ADD["task_id"], "completion": "    return a + b\n", "passed": False},
        {"id": ADD["task_id"], "completion": "    return a - b\n", "passed": True},
    ]
    out = rescore(records, {ADD["task_id"]: ADD}, workers=2, timeout=10.0)
    assert [r["passed"] for r in out] == [True, False]
    assert [r["status"] for r in out] == ["passed", "failed"]
    assert all(r["canonical_passed"] for r in out)
    with pytest.raises(ValueError, match="not in --humaneval"):
        rescore([{"id": "Other/1", "completion": ""}], {ADD["task_id"]: ADD}, 1, 10.0)
