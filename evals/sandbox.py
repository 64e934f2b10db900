"""Run untrusted programs (model completions + unit tests) in an isolated, limited process.

Isolation comes from bubblewrap (``bwrap``, Debian package ``bubblewrap``), a maintained
sandboxing tool: new PID, network, IPC, UTS and mount namespaces, the system (``/usr``) and the
interpreter bound read-only, nothing else of the host visible (no ``/etc``, no home, no project),
a private size-limited tmpfs as working directory and ``/tmp``, a clean environment,
``--die-with-parent`` and ``--new-session``. When the evaluator runs as root, the program itself
runs as an unprivileged user id of its own (one per concurrent slot, via ``setpriv``) with no
capabilities and ``no_new_privs``, so read-only mounts stay read-only and the process-count limit
applies. Resource limits (CPU seconds, address space, file size, processes) are set before exec.
At the deadline the whole sandbox dies with its PID namespace; output is read through bounded
buffers (head and tail kept, the rest counted and dropped) and never waited on once the program
has ended, so a stray child holding a pipe cannot block the evaluator.

Where bwrap is missing or fails its self-test, programs still run (``python -I`` in a temporary
directory, own session, same limits, sockets disabled by the prelude), but :func:`isolation`
says so and the eval reports reduced isolation loudly.

**Pass = the tests completed.** A per-run random nonce is handed to the harness on stdin (never
in the program's file, arguments or environment) and printed only after ``check(entry)``
returns; ``passed`` needs exit code 0 *and* the nonce on stdout, so ``os._exit(0)``,
``sys.exit(0)``, ``exit()``, a module-level ``raise SystemExit`` or an exit hook that ends the
process early all count as failures. The harness also flags a candidate that returns an object
equal to everything (``__eq__`` always true), which passes HumanEval's ``==`` asserts in the
reference harness too: here it is status ``always-equal``, not a pass. Limits: a program written
to defeat the harness (walking the interpreter's frames for the nonce) is out of scope; the
nonce stops the early exits that model completions actually produce.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import queue
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

TIMEOUT = 3.0  # seconds per program: the reference harness's (human-eval-infilling) default
MEMORY_MB = 1024
NPROC = 64  # processes (and threads) the program may run at once
FILE_MB = 16  # largest file the program may write
TMPFS_MB = 64  # size of its writable working directory (and of /tmp)
KEEP_BYTES = 1 << 20  # output kept per stream (head + tail); the rest is counted and dropped
TAIL_BYTES = 64 << 10
GRACE = 0.5  # seconds to drain output after the program has ended
SLOT_UID = 61000  # first user id of the sandbox slots when the evaluator runs as root
WORKDIR = "/sandbox"

# Runs in the sandboxed interpreter: reads the nonce, runs program.py, calls check(entry) with a
# watched candidate, then prints the nonce (with ":always-equal" if the candidate returned an
# object equal to a fresh object). Sockets are patched out as defence in depth (the network
# namespace is the real barrier).
HARNESS = r"""
import functools, os, socket, sys
def _assd_harness():
    write = os.write
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    entry = sys.argv[1] if len(sys.argv) > 1 else ""
    def no_network(*a, **k):
        raise OSError("network access is disabled in the sandbox")
    socket.socket = socket.create_connection = socket.getaddrinfo = no_network
    sys.argv = ["program.py"]
    probe = type("Probe", (), {})()
    flagged = []
    def equal_to_anything(x, depth=0):
        try:
            if x == probe:
                return True
        except Exception:
            return False
        if depth < 3 and type(x) in (list, tuple, set, frozenset, dict):
            items = list(x.values() if type(x) is dict else x)[:1000]
            return any(equal_to_anything(v, depth + 1) for v in items)
        return False
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    g = {"__name__": "__main__", "__file__": "program.py"}
    exec(compile(source, "program.py", "exec"), g)
    if entry:
        fn = g[entry]
        @functools.wraps(fn)
        def watched(*a, **k):
            out = fn(*a, **k)
            if not flagged and equal_to_anything(out):
                flagged.append(True)
            return out
        g["check"](watched)
    try:
        sys.stdout.flush()
    except Exception:
        pass
    write(1, ("\n" + nonce + (":always-equal" if flagged else "") + "\n").encode())
_assd_harness()
"""

STATUSES = ("passed", "failed", "early-exit", "always-equal", "timeout", "memory", "sandbox-error")


@dataclass
class SandboxResult:
    """One program's verdict.

    status: passed (exit 0 and the tests completed) | failed (non-zero exit: an assert, an
    exception, a syntax error) | early-exit (exit 0 but the tests never completed) |
    always-equal (the tests completed only because the candidate returned an object equal to
    everything) | timeout | memory | sandbox-error (the sandbox itself failed to start).
    """

    status: str
    returncode: int | None
    seconds: float
    stderr: str
    stdout: str = ""
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """A program and, for HumanEval-style tests, the entry point that ``check`` is called with."""

    source: str
    entry: str | None = None


@dataclass(frozen=True)
class Isolation:
    """How programs are isolated here: ``bwrap`` or ``reduced`` (with the reason)."""

    level: str
    detail: str

    @property
    def reduced(self) -> bool:
        return self.level != "bwrap"


# -- bounded output ------------------------------------------------------------------------------
class BoundedBuffer:
    """Keeps the first ``keep - tail`` bytes and the last ``tail`` bytes; counts the rest."""

    def __init__(self, keep: int = KEEP_BYTES, tail: int = TAIL_BYTES):
        self.head_limit, self.tail_limit = keep - tail, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail += chunk
        extra = len(self.tail) - self.tail_limit
        if extra > 0:
            del self.tail[:extra]
            self.dropped += extra

    def text(self) -> str:
        mid = f"\n[... {self.dropped} bytes dropped ...]\n".encode() if self.dropped else b""
        return (bytes(self.head) + mid + bytes(self.tail)).decode("utf-8", "replace")


def _communicate(proc: subprocess.Popen, stdin: bytes, deadline: float):
    """Feed stdin, read stdout/stderr into bounded buffers until both close, the program has
    ended (plus a short drain), or the deadline. -> (stdout, stderr, timed_out)."""
    try:
        proc.stdin.write(stdin)
        proc.stdin.close()
    except OSError:  # the program ended (or closed stdin) before reading it
        pass
    bufs = {proc.stdout.fileno(): BoundedBuffer(), proc.stderr.fileno(): BoundedBuffer()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out, ended = False, None
    try:
        while sel.get_map():
            now = time.monotonic()
            if ended is None and proc.poll() is not None:
                ended = now
            if ended is not None and now > ended + GRACE:
                break  # a stray child holds a pipe open: do not wait for it
            if now >= deadline:
                timed_out = ended is None
                break
            limit = deadline if ended is None else min(deadline, ended + GRACE)
            for key, _ in sel.select(timeout=min(limit - now, 0.05)):
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if chunk:
                    bufs[key.fd].add(chunk)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
    return bufs[proc.stdout.fileno()], bufs[proc.stderr.fileno()], timed_out


# -- the sandbox command -------------------------------------------------------------------------
def _interpreter() -> str:
    return os.path.realpath(sys.executable)


def _interpreter_roots() -> list[str]:
    """Host directories the interpreter needs (its prefix and its binary's), outside /usr."""
    roots = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(_interpreter()))}
    out = []
    for r in sorted(roots):
        if r == "/" or r == "/usr" or r.startswith("/usr/"):
            continue
        if not any(r.startswith(o + "/") for o in out):
            out.append(r)
    return out


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = "/" + top
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            args += ["--ro-bind", p, p]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--perms", "0755", "--dir", "/etc"]
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for root in _interpreter_roots():
        parts = root.strip("/").split("/")
        for i in range(1, len(parts)):  # ancestors bwrap would otherwise create as 0700
            args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
        args += ["--ro-bind", root, root]
    return args


def _drop_uid_available() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def bwrap_command(program_fd: int, uid: int | None) -> list[str]:
    """argv of one sandboxed run: bwrap, the binds, then (as root) setpriv to ``uid``."""
    ns = ["--unshare-all"]
    if uid is not None:  # root: namespaces without a user namespace, then drop to a real uid
        ns = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        ns += ["--unshare-cgroup-try"]
    size = str(TMPFS_MB << 20)
    cmd = [shutil.which("bwrap") or "bwrap", *ns, "--die-with-parent", "--new-session"]
    cmd += ["--clearenv", *_system_binds(), "--proc", "/proc", "--dev", "/dev"]
    for d in (WORKDIR, "/tmp", "/dev/shm"):
        cmd += ["--size", size, "--perms", "1777", "--tmpfs", d]
    cmd += ["--perms", "0644", "--ro-bind-data", str(program_fd), f"{WORKDIR}/program.py"]
    cmd += ["--chdir", WORKDIR, "--hostname", "sandbox"]
    env = {"PATH": "/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    env["PYTHONHASHSEED"] = "0"
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    cmd.append("--")
    if uid is not None:
        cmd += [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        cmd += ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    return cmd


def _limits(timeout: float, memory_mb: int, nproc: int):
    """preexec_fn: rlimits, and death with the evaluator. Only pre-resolved calls (no imports)."""
    setrlimit, prctl = resource.setrlimit, _prctl()
    cpu = int(timeout) + 1
    mem = memory_mb << 20
    fsize = FILE_MB << 20

    def apply():
        setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        setrlimit(resource.RLIMIT_AS, (mem, mem))
        setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        setrlimit(resource.RLIMIT_CORE, (0, 0))
        setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die if the evaluator dies

    return apply


@functools.cache
def _prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _user_processes() -> int:
    """Processes of this user now (RLIMIT_NPROC counts all of them, not only the sandbox's)."""
    uid, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                n += os.stat(f"/proc/{d}").st_uid == uid
            except OSError:
                pass
    return n


class _Slots:
    """User ids for concurrent sandboxes (root only): one uid per running program, so the
    process-count limit of one program never starves another."""

    def __init__(self, n: int = 64):
        used = {p.pw_uid for p in pwd.getpwall()}
        base = SLOT_UID + 200 * int(os.environ.get("LOCAL_RANK", "0") or 0)  # per process
        self.free: queue.Queue[int] = queue.Queue()
        for u in range(base, base + 2 * n):
            if u not in used and self.free.qsize() < n:
                self.free.put(u)

    @contextlib.contextmanager
    def take(self):
        uid = self.free.get()
        try:
            yield uid
        finally:
            self.free.put(uid)


@functools.cache
def _slots() -> _Slots:
    return _Slots()


# -- isolation self-test -------------------------------------------------------------------------
SELF_TEST = """\
import os, socket
assert not os.path.exists("/etc/shadow") and not os.path.exists("/etc/passwd"), "host /etc visible"
pids = [p for p in os.listdir("/proc") if p.isdigit()]
assert len(pids) <= 4, f"host processes visible: {pids}"
assert [n for _, n in socket.if_nameindex()] == ["lo"], "network interfaces visible"
open("probe.txt", "w").write("x")
print("isolated uid", os.getuid())
"""


@functools.cache
def isolation() -> Isolation:
    """Probe once: does a bwrap sandbox start here and hide the host? Logged loudly if not."""
    exe = shutil.which("bwrap")
    if exe is None:
        iso = Isolation(
            "reduced", "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
        )
    else:
        r = _run(Job(SELF_TEST), 10.0, MEMORY_MB, NPROC, use_bwrap=True, label="bwrap")
        if r.status == "passed" and "isolated uid" in r.stdout:
            uid = r.stdout.split("isolated uid", 1)[1].split()[0]
            if _drop_uid_available():
                who = f"evaluator is root: no user namespace, the program runs as uid {uid}"
            else:
                who = f"user namespace, the program runs as uid {uid}"
            detail = (
                "bubblewrap: new PID/network/IPC/UTS/mount namespaces, system and interpreter "
                f"read-only, private tmpfs work dir, clean environment ({who}); rlimits on CPU "
                f"time, address space, file size ({FILE_MB} MB) and processes ({NPROC})"
            )
            if uid == "0":
                detail += " (the process-count limit does not bind uid 0)"
            iso = Isolation("bwrap", detail)
        else:
            why = (r.stderr.strip().splitlines() or [r.status])[-1][:300]
            iso = Isolation("reduced", f"bwrap failed its self-test ({r.status}: {why})")
    if iso.reduced:
        msg = (
            f"REDUCED ISOLATION for untrusted code: {iso.detail}. Programs run as this user with "
            "rlimits and a socket-patching prelude only; they can read and write this user's "
            "files and signal this user's processes."
        )
        log.warning(msg)
        print(f"[sandbox] WARNING: {msg}", file=sys.stderr, flush=True)
    return iso


# -- running -------------------------------------------------------------------------------------
def run_program(
    program: str | Job,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    nproc: int = NPROC,
    entry: str | None = None,
) -> SandboxResult:
    """Execute ``program`` (then ``check(entry)`` if an entry point is given) in the sandbox.

    ``passed`` iff it exits 0 within the limits *and* the harness's nonce shows the program
    (and ``check``) ran to completion; see the module docstring.
    """
    job = program if isinstance(program, Job) else Job(program, entry)
    if not isinstance(job.source, str):
        raise TypeError(f"program must be a str, got {type(job.source).__name__}")
    if not timeout > 0 or memory_mb < 64 or nproc < 1:
        raise ValueError(
            f"need timeout > 0 s, memory_mb >= 64 and nproc >= 1 "
            f"(got {timeout}, {memory_mb}, {nproc})"
        )
    iso = isolation()
    return _run(job, timeout, memory_mb, nproc, use_bwrap=not iso.reduced, label=iso.level)


def _run(
    job: Job, timeout: float, memory_mb: int, nproc: int, use_bwrap: bool, label: str
) -> SandboxResult:
    with tempfile.TemporaryDirectory(prefix="assd-sandbox-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(job.source)
        if not use_bwrap:
            return _launch(job, path, timeout, memory_mb, nproc, label, bwrap=False)
        if not _drop_uid_available():
            return _launch(job, path, timeout, memory_mb, nproc, label, bwrap=True)
        with _slots().take() as uid:
            return _launch(job, path, timeout, memory_mb, nproc, label, bwrap=True, uid=uid)


def _launch(
    job: Job,
    path: str,
    timeout: float,
    memory_mb: int,
    nproc: int,
    label: str,
    bwrap: bool,
    uid: int | None = None,
) -> SandboxResult:
    """One run: in bwrap (as ``uid`` when the evaluator is root) or, reduced, a bare python."""
    nonce = secrets.token_hex(16)
    python = [_interpreter(), "-I", "-c", HARNESS] + ([job.entry] if job.entry else [])
    if uid is None:
        nproc += _user_processes()  # the limit counts every process of this user
    with open(path, "rb") as pf:
        if bwrap:
            cmd, cwd, env = [*bwrap_command(pf.fileno(), uid), *python], None, {}
        else:
            cmd, cwd = python, os.path.dirname(path)
            env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "TMPDIR": cwd, "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limits(timeout, memory_mb, nproc),
            start_new_session=True,
            pass_fds=(pf.fileno(),) if bwrap else (),
        )
    try:
        out, err, timed_out = _communicate(proc, (nonce + "\n").encode(), t0 + timeout)
    finally:
        _kill(proc)
        for f in (proc.stdout, proc.stderr):
            f.close()
    return _verdict(proc.returncode, out.text(), err.text(), timed_out, nonce, t0, label)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (bwrap: the PID namespace dies with it), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _verdict(rc, stdout, stderr, timed_out, nonce, t0, label) -> SandboxResult:
    secs = time.monotonic() - t0
    lines = stdout.splitlines()
    completed, always_equal = nonce in lines, f"{nonce}:always-equal" in lines
    signalled = rc is not None and (rc < 0 or rc >= 128)
    sig = -rc if rc is not None and rc < 0 else (rc - 128 if signalled else 0)
    if timed_out or sig in (signal.SIGXCPU, signal.SIGKILL):
        status = "timeout"
    elif rc == 0 and completed:
        status = "passed"
    elif rc == 0 and always_equal:
        status = "always-equal"
    elif "MemoryError" in stderr[-4000:]:
        status = "memory"
    elif rc != 0 and stderr.lstrip().startswith("bwrap:"):
        status = "sandbox-error"
    elif rc == 0:
        status = "early-exit"
    else:
        status = "failed"
    shown = stdout.replace(nonce, "<nonce>")[-2000:]
    return SandboxResult(status, rc, secs, stderr[-2000:], shown, label)


def run_many(programs: list[str | Job], workers: int = 2, **kw) -> list[SandboxResult]:
    """Run programs concurrently (one sandbox each); results in input order."""
    isolation()  # probe (and warn) once, before the threads start
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda p: run_program(p, **kw), programs))


def humaneval_job(problem: dict, completion: str) -> Job:
    """The HumanEval-infilling check program (prompt + completion + suffix + tests), with
    ``check(entry_point)`` called by the harness so that its completion is observable."""
    source = problem["prompt"] + completion + problem["suffix"] + "\n" + problem["test"] + "\n"
    return Job(source, problem["entry_point"])
