"""Load test of the demo server with locust: concurrent clients, cancellations, hostile requests.

    python evals/load_test.py                        # 16 clients x 50 requests (the README's)
    python evals/load_test.py --users 4 --requests 10 --out /tmp/lt   # a small run

Starts ``python app.py`` on 127.0.0.1 itself (embedded prose and code models), then runs locust
headless in this process, bounded in requests (each client stops after --requests) and in time
(--time-limit). Each client mixes: ordinary requests (lengths 4-48 masked tokens, the four
samplers, one or three lanes, both models), streamed ``/run`` requests cancelled after their
first update, and hostile ones (an oversized body, a huge [MASK:n], a model path outside the
allow-list, absurd k and seed, non-ASCII digits, malformed JSON). Every ordinary result must
equal the one the same request gave when run alone before the test (nothing mixed between
clients), every hostile one must get its clear refusal. The server's RSS is sampled throughout.
The run is split in two halves of equal work: RSS growth in the second half shows a leak.

Prints a table and writes ``load_test.json`` and ``rss.png`` under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gevent
import locust
import psutil
import requests
from locust import HttpUser, task
from locust.env import Environment
from locust.exception import StopUser

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "evals" / "results" / "load_test"
API = "/gradio_api"

# (text, model): mixed lengths, prose and code.
TEXTS = [
    ("The cat sat on the [MASK:4] The dog sat on the log.", "prose"),
    (
        "Maria had never seen the sea. [MASK:16] When she finally reached the shore, she laughed.",
        "prose",
    ),
    (
        "The old lighthouse keeper lived alone on the island. [MASK:32] Every evening he lit the lamp.",
        "prose",
    ),
    ("[MASK:48] and that is how the little town got its name.", "prose"),
    ("Café au lait: [HIDE]un café[/HIDE] avec du lait chaud, 3 € à Paris.", "prose"),
    ("def add(a, b):\n    return [MASK:6]\n", "code"),
    (
        "def mean(xs):\n    total = 0\n    for x in xs:\n        [MASK:12]\n    return total / len(xs)\n",
        "code",
    ),
]
SAMPLERS = [("fastest", 5), ("assd", 3), ("assd", 8), ("one-call", 5), ("sequential", 5)]
HOSTILE = [
    # (name, api kwargs or None for a raw body, expected refusal)
    ("oversized body", None, "413"),
    ("huge [MASK:n]", dict(text="[MASK:100000]" * 1000), "too long"),
    ("model path", dict(text="a [MASK] b", model="/etc/passwd"), "not served here"),
    ("unlisted Hub id", dict(text="a [MASK] b", model="someone/private-model"), "not served here"),
    ("absurd k", dict(text="a [MASK] b", sampler="assd", k=10**9), "must be a whole number"),
    ("absurd seed", dict(text="a [MASK] b", seed=10**30), "seed"),
    ("non-ASCII digits", dict(text="a [MASK:２] b"), "ASCII digits"),
    ("malformed JSON", "not json", "422"),
]
INFILL_ARGS = [
    "text",
    "model",
    "sampler",
    "k",
    "temperature",
    "seed",
    "order",
    "compare",
    "unverified_k",
    "mask_mode",
    "mask_rate",
    "revision",
]
INFILL_DEFAULTS = dict(
    model="prose",
    sampler="fastest",
    k=5,
    temperature=1.0,
    seed=0,
    order="random",
    compare=False,
    unverified_k=4,
    mask_mode="markup",
    mask_rate=50.0,
    revision="",
)
RUN_ARGS = [
    "text",
    "model",
    "sampler",
    "k",
    "temperature",
    "seed",
    "order",
    "compare",
    "unverified_k",
    "slow",
]


def specs(n: int = 24, seed: int = 0) -> list[dict]:
    """The ordinary requests: n /infill calls over the texts, samplers, lanes and seeds."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text, model = TEXTS[i % len(TEXTS)]
        sampler, k = rng.choice(SAMPLERS)
        out.append(
            dict(
                text=text,
                model=model,
                sampler=sampler,
                k=k,
                seed=rng.randrange(1000),
                compare=rng.random() < 0.3,
                order=rng.choice(["random", "left-to-right"]),
            )
        )
    return out


# -- the server --------------------------------------------------------------------------------


class DemoServer:
    """``python app.py`` on a free loopback port, stopped on exit."""

    def __init__(self, *args: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
        cmd = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        end = time.monotonic() + 180
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            raise TimeoutError("app.py did not start within 180 s")

    def rss_mb(self) -> float:
        p = psutil.Process(self.proc.pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- Gradio's queue protocol, as the page speaks it --------------------------------------------


class Api:
    """Calls the app's public endpoints through ``/queue/join`` and ``/queue/data``."""

    def __init__(self, session: requests.Session, base: str = ""):
        self.s, self.base = session, base
        config = self.s.get(f"{base}/config", timeout=30).json()
        self.fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def call(self, api: str, kwargs: dict, cancel_after: int | None = None) -> dict:
        """-> {"ok", "error", "updates", "output", "cancelled", "status"}; cancel_after=n
        cancels the event after its n-th streamed update (what the page's Stop does)."""
        names = INFILL_ARGS if api == "infill" else RUN_ARGS
        full = {**INFILL_DEFAULTS, "compare": api == "run", "slow": 0.0, **kwargs}
        session = uuid.uuid4().hex[:12]
        body = {"data": [full[n] for n in names], "fn_index": self.fn[api], "session_hash": session}
        r = self.s.post(f"{self.base}{API}/queue/join", json=body, timeout=60)
        if r.status_code != 200:
            return dict(ok=False, error=f"{r.status_code} {r.text[:200]}", status=r.status_code)
        event = r.json()["event_id"]
        out = dict(ok=False, error="", updates=0, output=None, cancelled=False, status=200)
        url = f"{self.base}{API}/queue/data?session_hash={session}"
        stream = self.s.get(url, stream=True, timeout=300)
        try:
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event):
                    return dict(out, error=f"a message for another event: {msg}")
                kind = msg.get("msg")
                if kind == "process_generating":
                    out["updates"] += 1
                    out["output"] = msg["output"]["data"][0]
                    if cancel_after is not None and out["updates"] >= cancel_after:
                        body = {
                            "session_hash": session,
                            "fn_index": self.fn[api],
                            "event_id": event,
                        }
                        self.s.post(f"{self.base}{API}/cancel", json=body, timeout=30)
                        out["cancelled"] = True
                elif kind == "process_completed":
                    if msg.get("success"):
                        data = msg["output"].get("data") or [None]
                        out["output"] = data[0] if data[0] is not None else out["output"]
                        out["ok"] = True
                    else:
                        out["error"] = str(msg.get("output", {}).get("error") or msg)
                    break
                elif kind in ("close_stream", "unexpected_error"):
                    out["error"] = out["error"] or str(msg)
                    break
        finally:
            stream.close()
        if out["cancelled"] and not out["ok"]:
            out["ok"], out["error"] = True, ""  # a cancelled event ends without a result
        return out

    def raw(self, body: bytes) -> int:
        r = self.s.post(f"{self.base}{API}/queue/join", data=body, timeout=60)
        return r.status_code


def hostile(api: Api, name: str, kwargs, expected: str) -> str:
    """'' if the server refused the request as expected, else what went wrong."""
    if kwargs is None:
        status = api.raw(b'{"data": ["' + b"x" * (256 * 1024) + b'"]}')
    elif isinstance(kwargs, str):
        status = api.raw(kwargs.encode())
    else:
        res = api.call("infill", kwargs)
        ok = not res["ok"] and expected in res["error"]
        return "" if ok else f"{name}: expected '{expected}', got {res}"
    return "" if str(status) == expected else f"{name}: expected HTTP {expected}, got {status}"


# -- the load --------------------------------------------------------------------------------


class Record:
    """What every client saw (locust runs the users as greenlets of this process)."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, kind: str, t0: float, problem: str, half: int) -> None:
        self.rows.append(
            dict(kind=kind, latency_s=time.perf_counter() - t0, problem=problem, half=half)
        )


def make_user(record: Record, refs: list[str], plan: list[dict], n_requests: int, seed: int):
    class DemoUser(HttpUser):
        wait_time = locust.between(0.0, 0.2)

        def on_start(self):
            self.api = Api(self.client)
            self.done = 0
            self.rng = random.Random(seed + id(self) % 10_000)

        @task
        def one(self):
            if self.done >= n_requests:
                raise StopUser()
            half = 0 if self.done < n_requests // 2 else 1
            self.done += 1
            t0 = time.perf_counter()
            try:
                self.request(half, t0)
            except Exception as e:  # a broken connection, a timeout: a problem to report
                record.add("error", t0, f"{type(e).__name__}: {e}", half)

        def request(self, half: int, t0: float) -> None:
            r = self.rng.random()
            if r < 0.15:  # a hostile request
                name, kwargs, expected = self.rng.choice(HOSTILE)
                record.add("hostile", t0, hostile(self.api, name, kwargs, expected), half)
            elif r < 0.3:  # a streamed run, cancelled after its first update
                i = self.rng.randrange(len(plan))
                res = self.api.call("run", dict(plan[i], slow=3.0, compare=True), cancel_after=1)
                problem = "" if res["ok"] and res["cancelled"] else f"cancel: {res}"
                record.add("cancelled", t0, problem, half)
            else:
                i = self.rng.randrange(len(plan))
                api = "run" if r < 0.4 else "infill"
                res = self.api.call(api, plan[i])
                got = (res.get("output") or {}).get("text") if res["ok"] else None
                problem = (
                    ""
                    if got == refs[i]
                    else f"{api} {i}: {res.get('error') or got!r} != {refs[i]!r}"
                )
                record.add(api, t0, problem, half)

    return DemoUser


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=16, help="concurrent clients")
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--time-limit", type=float, default=1500, help="seconds, then stop")
    p.add_argument("--concurrency", type=int, default=2, help="the server's runs at once")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plan = specs(seed=args.seed)
    with DemoServer("--models", "prose,code", "--concurrency", str(args.concurrency)) as server:
        api = Api(requests.Session(), server.url)
        print(f"server at {server.url}, pid {server.proc.pid}; references for {len(plan)} requests")
        t0 = time.perf_counter()
        refs = []
        for spec in plan:
            res = api.call("infill", spec)
            if not res["ok"]:
                raise SystemExit(f"reference request failed: {spec}: {res['error']}")
            refs.append(res["output"]["text"])
        alone_s = time.perf_counter() - t0
        rss_before = server.rss_mb()
        record = Record()
        env = Environment(
            user_classes=[make_user(record, refs, plan, args.requests, args.seed)], host=server.url
        )
        runner = env.create_local_runner()
        rss = [(0.0, rss_before)]
        mid = {}
        t_start = time.perf_counter()
        runner.start(args.users, spawn_rate=args.users)

        def sample_rss():
            while True:
                gevent.sleep(0.5)
                rss.append((time.perf_counter() - t_start, server.rss_mb()))
                if not mid and len(record.rows) >= args.users * args.requests // 2:
                    mid.update(t=rss[-1][0], rss=rss[-1][1])

        sampler = gevent.spawn(sample_rss)
        while runner.user_count < args.users and not record.rows:  # spawning
            gevent.sleep(0.1)
        while runner.user_count > 0 and time.perf_counter() - t_start < args.time_limit:
            gevent.sleep(0.5)
        timed_out = runner.user_count > 0
        runner.quit()
        sampler.kill()
        elapsed = time.perf_counter() - t_start
        gevent.sleep(2.0)  # let the last cancelled runs end
        rss_after = server.rss_mb()
        rss.append((time.perf_counter() - t_start, rss_after))
    report = summarize(args, record, rss, rss_before, rss_after, mid, elapsed, alone_s, timed_out)
    (args.out / "load_test.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_rss(rss, mid, args.out / "rss.png")
    (args.out / "load_test.md").write_text(markdown(report))
    print_table(report)
    print(f"wrote load_test.json, load_test.md and rss.png in {args.out}")
    return 0 if report["ok"] else 1


def summarize(args, record, rss, before, after, mid, elapsed, alone_s, timed_out) -> dict:
    rows = record.rows
    problems = [r["problem"] for r in rows if r["problem"]]
    kinds = {}
    for kind in ("infill", "run", "cancelled", "hostile"):
        lat = sorted(r["latency_s"] for r in rows if r["kind"] == kind)
        if lat:
            kinds[kind] = dict(n=len(lat), p50_s=_pct(lat, 50), p99_s=_pct(lat, 99), max_s=lat[-1])
    everything = sorted(r["latency_s"] for r in rows)
    return dict(
        ok=not problems and not timed_out and len(rows) == args.users * args.requests,
        users=args.users,
        requests_per_user=args.requests,
        requests=len(rows),
        problems=problems[:20],
        n_problems=len(problems),
        timed_out=timed_out,
        elapsed_s=round(elapsed, 1),
        throughput_per_s=round(len(rows) / elapsed, 2) if elapsed else None,
        latency_p50_s=_pct(everything, 50) if everything else None,
        latency_p99_s=_pct(everything, 99) if everything else None,
        by_kind=kinds,
        rss_mb=dict(
            before=round(before, 1),
            halfway=round(mid.get("rss", float("nan")), 1),
            after=round(after, 1),
            peak=round(max(r for _, r in rss), 1),
        ),
        references_alone_s=round(alone_s, 1),
        server_concurrency=args.concurrency,
        machine=dict(cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2)),
        date=time.strftime("%Y-%m-%d %H:%M"),
        locust=locust.__version__,
    )


def _pct(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted xs, rounded to ms."""
    i = max(0, min(len(xs) - 1, int(round(q / 100 * len(xs) + 0.5)) - 1))
    return round(xs[i], 3)


def print_table(r: dict) -> None:
    print(
        f"\n{r['users']} clients x {r['requests_per_user']} requests: {r['requests']} done in "
        f"{r['elapsed_s']} s ({r['throughput_per_s']} / s), problems: {r['n_problems']}"
        f"{' (TIMED OUT)' if r['timed_out'] else ''}"
    )
    print(f"{'kind':<10} {'n':>5} {'p50 s':>8} {'p99 s':>8} {'max s':>8}")
    for kind, k in r["by_kind"].items():
        print(f"{kind:<10} {k['n']:>5} {k['p50_s']:>8.3f} {k['p99_s']:>8.3f} {k['max_s']:>8.3f}")
    if r["requests"]:
        print(
            f"{'all':<10} {r['requests']:>5} {r['latency_p50_s']:>8.3f} {r['latency_p99_s']:>8.3f}"
        )
    m = r["rss_mb"]
    print(
        f"server RSS (MB): before {m['before']}, halfway {m['halfway']}, after {m['after']}, "
        f"peak {m['peak']}"
    )
    for problem in r["problems"]:
        print("  problem:", problem)


def markdown(r: dict) -> str:
    """The table for the README."""
    m = r["rss_mb"]
    lines = [
        f"{r['users']} clients x {r['requests_per_user']} requests against `python app.py` on "
        f"127.0.0.1 ({r['machine']['cpus']} CPUs, load average {r['machine']['load_avg_1m']} at "
        f"the end, server concurrency {r['server_concurrency']}), {r['date']}: {r['requests']} "
        f"requests in {r['elapsed_s']} s, {r['n_problems']} problems (errors, results differing "
        "from the same request alone, hostile requests not refused).",
        "",
        "| requests | n | latency p50 (s) | p99 (s) |",
        "|---|---|---|---|",
    ]
    for kind, k in r["by_kind"].items():
        lines.append(f"| {kind} | {k['n']} | {k['p50_s']:.2f} | {k['p99_s']:.2f} |")
    lines += [
        f"| all | {r['requests']} | {r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} |",
        "",
        f"Server RSS: {m['before']} MB before, {m['halfway']} MB halfway, {m['after']} MB after "
        f"(peak {m['peak']} MB).",
        "",
    ]
    return "\n".join(lines)


def plot_rss(rss, mid, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([t for t, _ in rss], [r for _, r in rss], color="#2563eb")
    if mid:
        ax.axvline(mid["t"], color="#a1a1aa", ls="--", lw=1, label="second half starts")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("seconds into the load test")
    ax.set_ylabel("server RSS (MB)")
    ax.grid(alpha=0.3)
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
