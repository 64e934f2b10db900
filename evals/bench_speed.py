"""Speed of exact AS-ARM sampling on trained models: every method side by side, one machine.

    python evals/bench_speed.py --models prose,code --out evals/results/bench_speed/gpu   # GPU
    python evals/bench_speed.py --models prose,code --device cpu --threads 2 --batch-sizes 1

For each trained model (the embedded ``prose`` and ``code`` models, with their draft heads, or
any model folder), the same prompts, orders and seeds for every method: (a) Hugging Face
reference + Sequential, (b) reference + the paper's ASSD (the paper's code path: full
recompute, draft + oracle call), (c) engine + Sequential, (d) engine + paper ASSD, (e) + bonus
token, (f) one call per round, (g) context-bigram drafts, (h) draft-head drafts, and (i) what
``assd.fastest`` picks. On CUDA the engine rounds replay as CUDA graphs; ``--eager-too`` adds the
same methods without them, ``--compile`` the same methods with each round's step fused by
``torch.compile`` before capture (keys ending in ``-c``; compile time is spent in the warm-up).
Reported: ms per sequence, target calls and draft-head calls, tokens per target call, ms per
round, and ratios against (c), (c-c) and (b), all from this one run.
Then per-call costs on an XLNet-base-size config with random weights (timings only).
Writes bench_speed.json, bench_speed.md and bench_speed.png.
"""

from __future__ import annotations

# ruff: noqa: E402  (the imports below follow the sys.path line that lets this run as a script)
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import gzip
import json
import lzma
import platform
import statistics
import time

import torch
from tqdm.auto import tqdm

import assd
from assd.backends import XLNetEngine, XLNetReference

DEFAULT_DATA = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/text/wiki_valid.jsonl.xz"
)
DEFAULT_CODE = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/code/python_stdlib.jsonl.xz"
)
BASE = dict(vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072)  # XLNet-base size
SMALL = dict(vocab_size=8000, d_model=256, n_layer=6, n_head=4, d_inner=2048)  # ~10M parameters
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        default="prose,code",
        help="comma list: 'prose', 'code' (embedded "
        "models), model folders, or 'random-small' / 'random-base' (timings only)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        default="bfloat16" if torch.cuda.is_available() else "float32",
        choices=sorted(DTYPES),
        help="engine dtype (the reference always runs float32)",
    )
    p.add_argument("--lengths", type=_ints, default=[256])
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8])
    p.add_argument("--n-seqs", type=int, default=8, help="sequences per (length, batch size)")
    p.add_argument(
        "--ref-seqs",
        type=int,
        default=None,
        help="sequences for the reference methods (default: one batch)",
    )
    p.add_argument(
        "--rate", type=float, default=0.95, help="masking rate (0.95: 26 of 512 visible)"
    )
    p.add_argument("--k", type=int, default=5)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the methods round-robin this many times; report medians and paired ratios "
        "(for noisy machines: a shared CPU)",
    )
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument(
        "--eager-too", action="store_true", help="also time the engine without CUDA graphs"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the engine methods with torch.compile'd rounds (keys ending in -c)",
    )
    p.add_argument(
        "--sync1-too",
        action="store_true",
        help="with --compile: also time the compiled methods reading the host's 'any row "
        "active?' flag after every round (keys ending in -c-s1; the default reads it every "
        "8 rounds on CUDA)",
    )
    p.add_argument(
        "--unkept-too",
        action="store_true",
        help="with --compile: also time the compiled methods capturing a round graph in every "
        "run instead of replaying the one kept from the last run (keys ending in -c-nk)",
    )
    p.add_argument(
        "--refill-too",
        action="store_true",
        help="with --compile: also time the compiled methods through assd.sample_many (all "
        "sequences through B rows, a finished row refilled with the next; keys ending in -c-r)",
    )
    p.add_argument(
        "--refill-every",
        type=_ints,
        default=[],
        help="with --refill-too: also time refilled runs whose host reads (and refills) come "
        "every n rounds instead of every 8 on CUDA (keys ending in -c-r<n>)",
    )
    p.add_argument(
        "--ablate-reuse",
        action="store_true",
        help="also time the engine recomputing proposal states instead of reusing them",
    )
    p.add_argument(
        "--per-call", default="base", help="'base', 'small' or 'none': per-call timing config"
    )
    p.add_argument("--per-call-reps", type=int, default=30)
    p.add_argument(
        "--data", default=str(DEFAULT_DATA), help="jsonl(.xz) with a 'text' field for prompts"
    )
    p.add_argument(
        "--data-code",
        default=str(DEFAULT_CODE),
        help="prompts for code models (a model whose name contains 'code')",
    )
    p.add_argument(
        "--head-ks",
        type=_ints,
        default=[2, 3, 5],
        help="proposals per round with head drafts (one method each)",
    )
    p.add_argument(
        "--stop-taus",
        type=_floats,
        default=[],
        help="adaptive draft lengths: head methods that stop drafting after a proposal of head "
        "probability < tau (keys h<k>s<tau>, hb<k>s<tau>)",
    )
    p.add_argument(
        "--adapt-ks",
        type=_floats,
        default=[],
        help="k per row from the running acceptance: head methods drafting proposal i while "
        "acc^(i+1) >= a (keys h<k>a<a>, hb<k>a<a>)",
    )
    p.add_argument(
        "--tree-cs",
        type=_ints,
        default=[4],
        help="candidates per rank of the token-tree head methods (keys h<k>t<c>)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma list of method keys to run (default: all), e.g. b,c,f,h3,i",
    )
    p.add_argument(
        "--prompts", default=None, help="json list of token-id lists (from --save-prompts)"
    )
    p.add_argument(
        "--save-prompts", default=None, help="write the prompt token ids used to this json"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler over rounds (eager; with --compile also compiled replays): "
        "kernels and kernel time per round (writes profile_*.txt)",
    )
    p.add_argument(
        "--profile-only", action="store_true", help="with --profile: skip the timed methods"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="evals/results/bench_speed")
    return p.parse_args(argv)


# -- models and prompts --------------------------------------------------------------------------
def random_net(cfg: dict, seed: int = 0):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    return XLNetLMHeadModel(XLNetConfig(**cfg, dropout=0.0)).eval()


def load_net(name: str):
    """-> (HF net float32 on CPU, tokenizer or None, forbidden ids, description, draft head)."""
    if name in ("random-small", "random-base"):
        net = random_net(SMALL if name == "random-small" else BASE)
        return net, None, (), f"{name} (random weights)", None
    loaded = assd.load(name, backend="reference", device="cpu")
    m = loaded.model
    return loaded.model.net, loaded.tokenizer, m.forbidden_ids, name, m.head


def prompt_pool(
    args, tokenizer, vocab: int, forbidden, n: int, L: int, data: str | None = None
) -> list[list[int]]:
    """n token sequences of length L: real text chunks when a tokenizer and data exist."""
    data = data or args.data
    if args.prompts:
        seqs = json.loads(Path(args.prompts).read_text())
        seqs = [s[:L] for s in seqs if len(s) >= L]
        if len(seqs) >= n:
            return seqs[:n]
    if tokenizer is not None:  # a trained model: real text, never random tokens
        if not Path(data).exists():
            raise SystemExit(
                f"bench_speed: prompt data {data} not found: pass --data / --data-code (a "
                "jsonl(.xz/.gz) with a 'text' field, e.g. ../shared/data/text/wiki_valid.jsonl.xz)"
                " or --prompts; a trained model is not timed on random tokens"
            )
        out: list[list[int]] = []
        opener = {".xz": lzma.open, ".gz": gzip.open}.get(Path(data).suffix, open)
        with opener(data, "rt") as f:
            for line in f:
                ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
                out += [ids[i : i + L] for i in range(0, len(ids) - L + 1, L)]
                if len(out) >= n:
                    return out[:n]
        raise SystemExit(f"bench_speed: {data} holds fewer than {n} chunks of {L} tokens")
    g = torch.Generator().manual_seed(1234)
    allowed = torch.tensor([t for t in range(vocab) if t not in set(forbidden)])
    return allowed[torch.randint(len(allowed), (n, L), generator=g)].tolist()


def make_batches(seqs: list[list[int]], L: int, B: int, rate: float, seed: int) -> list[assd.Batch]:
    """Each sequence gets its own random visible subset (the paper's protocol), B per batch."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(0, len(seqs), B):
        rows = seqs[i : i + B]
        orders = [assd.random_order(L, rate, g) for _ in rows]
        sigma = torch.stack([o[0] for o in orders])
        n_prompt = torch.stack([(~o[1]).sum() for o in orders])
        batches.append(assd.make_batch(torch.tensor(rows), sigma, n_prompt))
    return batches


# -- timing ----------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rng(seed: int, device: torch.device) -> torch.Generator:
    """A generator on the sampling device (a CPU one would copy every draw to the GPU)."""
    return torch.Generator(device).manual_seed(seed)


def run_method(model, sampler, batches, device, warm: int | None, opts: dict) -> dict:
    """Warm up (first batch: `warm` rounds, None = all), then time every batch to completion.
    opts: keyword arguments of ``assd.sample`` (graphs, compile); keep=False: every run captures
    its own round graph (``assd.samplers.graphs.KEEP_ROUNDS``), as before graphs were kept."""
    import assd.samplers.graphs as graphs_mod

    opts = dict(opts)
    keep = opts.pop("keep", True)
    saved, graphs_mod.KEEP_ROUNDS = graphs_mod.KEEP_ROUNDS, keep
    try:
        return _run_method(model, sampler, batches, device, warm, opts)
    finally:
        graphs_mod.KEEP_ROUNDS = saved


def _run_method(model, sampler, batches, device, warm: int | None, opts: dict) -> dict:
    warm_opts = {k: v for k, v in opts.items() if k not in ("sync_every", "refill")}
    gen = assd.generate(model, batches[0], sampler, rng(999, device), trace=False, **warm_opts)
    for i, _ in enumerate(gen):
        if warm is not None and i + 1 >= warm:
            break
    del gen
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    nfe, dcalls, rounds, gen_tokens, wall = [], [], [], 0, 0.0
    if opts.pop("refill", False):  # all sequences at once, B rows refilled as they finish
        parts = [(b.tokens, b.sigma, b.n_prompt, b.length) for b in batches]
        whole = assd.Batch(*(torch.cat(ts) for ts in zip(*parts)))
        # Warm-up of the refill's own code (its kernels' first launches load them) on the first
        # two batches' sequences.
        n = 2 * batches[0].size
        two = assd.Batch(
            *(t[:n] for t in (whole.tokens, whole.sigma, whole.n_prompt, whole.length))
        )
        assd.sample_many(model, two, sampler, rng(999, device), batch_size=batches[0].size, **opts)
        sync(device)
        t0 = time.perf_counter()
        res = assd.sample_many(
            model, whole, sampler, rng(0, device), batch_size=batches[0].size, **opts
        )
        sync(device)
        wall = time.perf_counter() - t0
        nfe, dcalls = [r.nfe for r in res], [r.draft_calls for r in res]
        # The run's rounds, about: each row runs its sequences back to back (a lower bound)
        rounds = [sum(r.rounds for r in res) / batches[0].size]
        gen_tokens = sum(r.n_generated for r in res)
        batches = []
    for j, b in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        res = assd.sample(model, b, sampler, rng(j, device), trace=False, **opts)
        sync(device)
        wall += time.perf_counter() - t0
        nfe += [r.nfe for r in res]
        dcalls += [r.draft_calls for r in res]
        rounds.append(max(r.rounds for r in res))
        gen_tokens += sum(r.n_generated for r in res)
    n = len(nfe)
    return {
        "n_seqs": n,
        "wall_s": wall,
        "per_seq_s": wall / n,
        "calls_per_seq": statistics.mean(nfe),
        "draft_calls_per_seq": statistics.mean(dcalls),
        "rounds_per_batch": statistics.mean(rounds),
        "ms_per_round": wall / sum(rounds) * 1e3,
        "tokens_per_call": gen_tokens / sum(nfe),
        "tokens_per_s": gen_tokens / wall,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else None,
    }


def methods(args, net, forbidden, head, device, dtype):
    """(key, label, model, sampler, is_reference, sample options) for every method."""
    k = args.k
    ref = XLNetReference(net, forbidden_ids=forbidden, head=head)
    eng = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False, head=head)
    out = []
    if not args.skip_reference:
        out += [
            ("a", "reference + Sequential", ref, assd.Sequential(), True, {}),
            ("b", f"reference + ASSD(k={k}) paper", ref, assd.ASSD(k), True, {}),
        ]
    samplers = [
        ("c", "engine + Sequential", assd.Sequential()),
        ("d", f"engine + ASSD(k={k}) paper", assd.ASSD(k)),
        ("e", f"engine + ASSD(k={k}, bonus)", assd.ASSD(k, bonus=True)),
        ("f", f"engine + ASSD(k={k}, one_call)", assd.ASSD(k, one_call=True)),
        ("g", f"engine + ASSD(k={k}, bigram, bonus)", assd.ASSD(k, draft="bigram", bonus=True)),
    ]
    if head is not None:
        for hk in args.head_ks:
            samplers.append(
                (f"h{hk}", f"engine + ASSD(k={hk}, draft head)", assd.ASSD(hk, draft="head"))
            )
            block = assd.ASSD(hk, draft="head", verify="block")
            samplers.append((f"hb{hk}", f"engine + ASSD(k={hk}, draft head, block verify)", block))
            # Adaptive draft lengths, token and block verification: stop after q(x) < tau
            # (key h<k>s<tau>), k per row from the running acceptance (h<k>a<a>).
            adaptive = [("stop_below", "s", "stop <", t) for t in args.stop_taus]
            adaptive += [("adapt_k", "a", "adapt", a) for a in args.adapt_ks]
            for field, tag, what, x in adaptive:
                for verify, v in (("token", ""), ("block", "b")):
                    s = assd.ASSD(hk, draft="head", verify=verify, **{field: x})
                    label = f"engine + ASSD(k={hk}, draft head{', block' * bool(v)}, {what} {x:g})"
                    samplers.append((f"h{v}{hk}{tag}{x:g}", label, s))
            for c in args.tree_cs:  # token trees: c candidates per rank
                tree = assd.ASSD(hk, draft="head", candidates=c)
                label = f"engine + ASSD(k={hk}, draft head, tree of {c} per rank)"
                samplers.append((f"h{hk}t{c}", label, tree))
    want = set(args.methods.split(",")) if args.methods else None
    if want is None or "i" in want:
        auto = assd.fastest(eng)  # measured on this device (assd.samplers.auto)
        samplers.append(("i", f"engine + fastest: {auto.name}", auto))
    samplers = [x for x in samplers if want is None or x[0] in want]
    out = [x for x in out if want is None or x[0] in want]
    out += [(key, label, eng, s, False, {}) for key, label, s in samplers]

    def variants(suffix: str, what: str, opts: dict) -> list:
        """Every engine method again with other sample options (keys ending in suffix)."""
        return [
            (key + suffix, f"{label} ({what})", eng, s, False, opts)
            for key, label, s in samplers
            if key != "i"
        ]

    if args.compile:
        out += variants("-c", "compiled rounds", {"compile": True})
        if args.unkept_too:  # what keeping round graphs across runs saves
            out += variants("-nk", "graphs not kept", {"keep": False})
            out += variants("-c-nk", "compiled, graphs not kept", {"compile": True, "keep": False})
        if args.refill_too:  # continuous batching: every sequence through B refilled rows
            out += variants("-c-r", "compiled, rows refilled", {"compile": True, "refill": True})
            for n in args.refill_every:  # refilled (and host reads) every n rounds
                opts = {"compile": True, "refill": True, "sync_every": n}
                out += variants(f"-c-r{n}", f"compiled, rows refilled every {n} rounds", opts)
        if args.sync1_too:
            out += variants(
                "-c-s1", "compiled, host sync every round", {"compile": True, "sync_every": 1}
            )
        if want is None or "i" in want:  # fastest as a user with compiled rounds gets it
            eng_c = XLNetEngine.from_hf(
                net, forbidden, dtype=dtype, check=False, head=head, compile_rounds=True
            )
            auto = assd.fastest(eng_c)  # every candidate timed compiled
            out.append(
                ("i-c", f"engine + fastest: {auto.name} (compiled rounds)", eng_c, auto, False, {})
            )
    if args.eager_too and device.type == "cuda":
        out += [
            (key + "-eager", label + " (eager rounds)", eng, s, False, {"graphs": False})
            for key, label, s in samplers
        ]
    if args.ablate_reuse:
        fresh = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False, reuse_proposals=False)
        out += [
            (
                "d-noreuse",
                f"engine (recompute proposals) + ASSD(k={k}) paper",
                fresh,
                assd.ASSD(k),
                False,
                {},
            )
        ]
    return out


def end_to_end(args, name, net, tokenizer, forbidden, head, device, dtype) -> list[dict]:
    """Every method on the same batches. With ``--repeats R`` the methods run round-robin R
    times (method 1, 2, ..., then again), so that a slow spell of a shared machine hits every
    method alike; each row then holds the median time over the repeats and each ratio the
    median of the R paired ratios (with their range), measured side by side."""
    rows = []
    vocab = net.config.vocab_size
    meths = methods(args, net, forbidden, head, device, dtype)
    data = args.data_code if "code" in name else args.data
    for L in args.lengths:
        for B in args.batch_sizes:
            n = max(args.n_seqs, B)
            seqs = prompt_pool(args, tokenizer, vocab, forbidden, n, L, data)
            batches = make_batches(seqs, L, B, args.rate, args.seed)
            n_ref = args.ref_seqs or B
            runs: dict[str, list[dict]] = {}
            todo = [m for m in meths if not (m[4] and B > 1)]  # the paper's code: batch 1 only
            for rep in range(args.repeats):
                for key, _label, model, sampler, is_ref, opts in tqdm(
                    todo, desc=f"{name} L={L} B={B} run {rep + 1}/{args.repeats}"
                ):
                    use = batches[: max(1, -(-n_ref // B))] if is_ref else batches
                    r = run_method(model, sampler, use, device, 3 if is_ref else None, opts)
                    runs.setdefault(key, []).append(r)
                    print(
                        f"  {name:6s} {key:8s} L={L:4d} B={B:2d} {r['per_seq_s'] * 1e3:9.1f} "
                        f"ms/seq {r['calls_per_seq']:6.1f} calls {r['draft_calls_per_seq']:6.1f} "
                        f"head {r['tokens_per_call']:.2f} tok/call {r['ms_per_round']:.2f} ms/round",
                        flush=True,
                    )
            for key, label, model, _sampler, is_ref, _opts in todo:
                rs = runs[key]
                r = _median_run(rs)
                if not is_ref:
                    r["cache_bytes"] = model.open(batches[0].to(device)).cache_bytes
                r["runs_per_seq_s"] = [x["per_seq_s"] for x in rs]
                rows.append({"model": name, "method": key, "label": label, "L": L, "B": B, **r})
    add_speedups(rows)
    return rows


def _median_run(rs: list[dict]) -> dict:
    """The repeats of one method: median time (calls and tokens are the same every repeat)."""
    out = dict(rs[0])
    for f in ("wall_s", "per_seq_s", "ms_per_round", "tokens_per_s"):
        out[f] = statistics.median(x[f] for x in rs)
    return out


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_<base>: with repeats, the median of the paired per-repeat ratios (and their
    range in speedup_vs_<base>_range), else the ratio of the two times."""
    by = {(r["model"], r["method"], r["L"], r["B"]): r for r in rows}
    for r in rows:
        for base in ("a", "b", "c", "c-c", "c-nk"):  # c-c: compiled (--compile); c-nk: --unkept-too
            ref = by.get((r["model"], base, r["L"], r["B"]))
            if ref is None:
                r[f"speedup_vs_{base}"] = None
                continue
            pairs = list(zip(ref.get("runs_per_seq_s", []), r.get("runs_per_seq_s", [])))
            if len(pairs) > 1:
                ratios = [a / b for a, b in pairs]
                r[f"speedup_vs_{base}"] = statistics.median(ratios)
                r[f"speedup_vs_{base}_range"] = [min(ratios), max(ratios)]
            else:
                r[f"speedup_vs_{base}"] = ref["per_seq_s"] / r["per_seq_s"]


def graph_check(net, forbidden, head, device, dtype, tokenizer, args) -> dict:
    """Whole-round graphs vs eager rounds: identical tokens for the same seed (CUDA only)."""
    if device.type != "cuda":
        return {}
    eng = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=True, head=head)
    seqs = prompt_pool(args, tokenizer, net.config.vocab_size, forbidden, 4, 128)
    batch = make_batches(seqs, 128, 4, args.rate, 1)[0]
    out = {}
    samplers = [assd.Sequential(), assd.ASSD(args.k), assd.ASSD(args.k, one_call=True)]
    samplers += [assd.ASSD(args.head_ks[0], draft="head")] if head is not None else []
    for s in samplers:
        a = assd.sample(eng, batch, s, rng(3, device), trace=False, graphs=True)
        b = assd.sample(eng, batch, s, rng(3, device), trace=False, graphs=False)
        out[s.name] = [x.tokens for x in a] == [y.tokens for y in b]
    return out


# -- per call ---------------------------------------------------------------------------------------
def call_kinds(k: int) -> dict[str, tuple]:
    """Each call kind as (m, q_rank, q_ctx, alt), ranks relative to n; tokens at ranks >= n + alt
    alternate between timed calls so that the rows a real call computes are recomputed."""
    ar = list(range(k))
    a_all = range(k + 1)
    one_r = ar + [k] + [a + 1 + i for a in a_all for i in ar]
    one_c = ar + [k] + [a for a in a_all for _ in ar]
    return {
        "sequential": (0, [0], [0], -1),
        "draft": (0, ar, [0] * k, -1),
        "oracle+bonus": (k, ar + [k], ar + [k], 0),
        "one_call": (k, one_r, one_c, 0),
    }


def time_calls(session, tokens_a, tokens_b, n, m, qr, qc, reps, device) -> float:
    """Median ms of a call; the tokens alternate so that the changed rows are recomputed."""
    times = []
    for i in range(reps + 5):
        tok = tokens_a if i % 2 else tokens_b
        sync(device)
        t0 = time.perf_counter()
        session.logits(tok, n, m, qr, qc)
        sync(device)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def per_call(args, device, dtype) -> list[dict]:
    cfg = BASE if args.per_call == "base" else SMALL
    net = random_net(cfg).to(device)
    L, k = 512, args.k
    engines = {"engine": XLNetEngine.from_hf(net, dtype=dtype, check=False)}
    if engines["engine"].graphs:
        engines["engine-eager"] = XLNetEngine.from_hf(net, dtype=dtype, check=False, graphs=False)
    rows = []
    for B in args.batch_sizes:
        g = torch.Generator().manual_seed(0)
        sig, mask = assd.random_order(L, args.rate, g)
        P = int((~mask).sum())
        tok = torch.randint(0, cfg["vocab_size"], (B, L), generator=g)
        batch = assd.make_batch(tok, sig.expand(B, L).clone(), P).to(device)
        n0 = L // 2
        for kind, (m, qr, qc, alt) in call_kinds(k).items():
            n = torch.full((B,), n0, device=device)
            mm = torch.full((B,), m, device=device)
            q_rank = torch.tensor([[n0 + r for r in qr]], device=device).expand(B, -1)
            q_ctx = torch.tensor([[n0 + c for c in qc]], device=device).expand(B, -1)
            tok_b = batch.tokens.clone()
            tok_b[batch.sigma >= n0 + alt] = (tok_b[batch.sigma >= n0 + alt] + 1) % cfg[
                "vocab_size"
            ]
            tok_a = batch.tokens
            for name, eng in engines.items():
                s = eng.open(batch)
                ms = time_calls(s, tok_a, tok_b, n, mm, q_rank, q_ctx, args.per_call_reps, device)
                rows.append(
                    {"backend": name, "kind": kind, "B": B, "L": L, "Q": q_rank.shape[1], "ms": ms}
                )
                print(
                    f"  per call {name:13s} {kind:13s} B={B:2d} Q={q_rank.shape[1]:3d} {ms:8.2f} ms",
                    flush=True,
                )
            if not args.skip_reference and kind in ("draft", "oracle+bonus"):
                ref = XLNetReference(net)
                s = ref.open(batch)
                ms = time_calls(
                    s, tok_a, tok_b, n, mm, q_rank, q_ctx, max(5, args.per_call_reps // 3), device
                )
                rows.append(
                    {
                        "backend": "reference",
                        "kind": kind,
                        "B": B,
                        "L": L,
                        "Q": q_rank.shape[1],
                        "ms": ms,
                    }
                )
                print(f"  per call {'reference':13s} {kind:13s} B={B:2d} {ms:8.2f} ms", flush=True)
    return rows


# -- profile ---------------------------------------------------------------------------------------
def profile_rounds(args, net, forbidden, head, device, dtype, path: Path) -> None:
    """Where a round's time goes: torch.profiler over 40 rounds (after warm-up) of sequential,
    one-call and (with a head) head-drafted ASSD, at each batch size: wall time, device kernels
    and their summed time per round, and the kernels that cost most. Eager rounds (launch by
    launch) always; with ``--compile`` also compiled rounds replayed as CUDA graphs (each
    replay's kernels are traced too), which is what the speed tables time. A round whose wall
    time is close to its kernels' summed time is bound by those kernels, not by the host."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from assd.samplers.run import rounds as run_rounds

    L = args.lengths[0]
    eng = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False, head=head)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    samplers = [assd.Sequential(), assd.ASSD(args.k, one_call=True)]
    if head is not None:
        samplers += [
            assd.ASSD(2, draft="head"),
            assd.ASSD(3, draft="head", verify="block"),
        ]
    modes = [("eager", False)] + ([("compiled", True)] if args.compile else [])
    text = []
    for B in args.batch_sizes:
        seqs = prompt_pool(args, None, net.config.vocab_size, forbidden, B, L)
        batch = make_batches(seqs, L, B, args.rate, args.seed)[0]
        for sampler in samplers:
            for mode, compiled in modes:
                if compiled:
                    gen = run_rounds(eng, batch, sampler, rng(0, device), compile=True)
                else:
                    gen = assd.generate(
                        eng, batch, sampler, rng(0, device), trace=False, graphs=False
                    )
                for _ in zip(range(10), gen):
                    pass
                sync(device)
                t0 = time.perf_counter()
                n = 0
                with profile(activities=acts) as prof:
                    for _ in range(40):
                        with record_function("round"):
                            if next(gen, None) is None:
                                break
                        n += 1
                    sync(device)
                dt = (time.perf_counter() - t0) / max(n, 1)
                avg = prof.key_averages()
                gpu = [  # kernels; the "round" annotation spans them and is not counted
                    e
                    for e in avg
                    if str(getattr(e, "device_type", "")).endswith("CUDA") and e.key != "round"
                ]
                n_kernels = sum(e.count for e in gpu) / max(n, 1)
                busy = sum(e.self_device_time_total for e in gpu) / max(n, 1) / 1e3  # ms
                sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                head_line = (
                    f"== B={B} {sampler.name} [{mode}]: {dt * 1e3:.3f} ms per round (under the "
                    f"profiler); {n_kernels:.0f} device kernels per round, {busy:.3f} ms of "
                    "kernel time per round"
                )
                text += [head_line, avg.table(sort_by=sort, row_limit=25)]
                print(head_line, flush=True)
    path.write_text("\n".join(text))


# -- correctness on this device ----------------------------------------------------------------------
def device_check(net, device, dtype) -> dict:
    """Engine (graphs and eager, float32) vs reference logits on this device, one-call query set."""
    L, k = 64, 5
    g = torch.Generator().manual_seed(5)
    sig, mask = assd.random_order(L, 0.8, g)
    P = int((~mask).sum())
    tok = torch.randint(0, net.config.vocab_size, (2, L), generator=g)
    batch = assd.make_batch(tok, sig.expand(2, L).clone(), P).to(device)
    n0 = P + 3
    m, qr, qc, _ = call_kinds(k)["one_call"]
    n = torch.full((2,), n0, device=device)
    mm = torch.full((2,), m, device=device)
    q_rank = torch.tensor([[n0 + r for r in qr]], device=device).expand(2, -1)
    q_ctx = torch.tensor([[n0 + c for c in qc]], device=device).expand(2, -1)
    want = XLNetReference(net).open(batch).logits(batch.tokens, n, mm, q_rank, q_ctx)
    out = {}
    for name, kw in (("eager_f32", dict(graphs=False)), ("graphs_f32", dict(graphs=None))):
        eng = XLNetEngine.from_hf(net, dtype=torch.float32, **kw)
        s = eng.open(batch)
        for _ in range(3):  # capture, then replay twice
            got = s.logits(batch.tokens, n, mm, q_rank, q_ctx)
        out[name] = float((got - want).abs().max())
    eng = XLNetEngine.from_hf(net, dtype=dtype)
    got = eng.open(batch).logits(batch.tokens, n, mm, q_rank, q_ctx)
    out[f"{dtype}".replace("torch.", "") + "_rel"] = float((got - want).norm() / want.norm())
    return out


# -- reporting ---------------------------------------------------------------------------------------
def markdown(meta: dict, e2e: list[dict], calls: list[dict]) -> str:
    lines = [
        f"# Speed benchmark ({meta['device_name']}, engine {meta['dtype']})",
        "",
        f"{meta['date']}; torch {meta['torch']}; threads {meta['threads']}; k={meta['k']}, "
        f"head k={meta['head_k']}, masking rate {meta['rate']}, lengths {meta['lengths']}; "
        f"CUDA graphs of whole rounds: {meta['graphs']}.",
        "",
    ]
    for m in meta["models"]:
        lines.append(
            f"- {m['name']}: {m['desc']}, {m['params_m']:.1f}M parameters"
            + (f", draft head {m['head_params_m']:.2f}M" if m.get("head_params_m") else "")
        )
    lines += [""]
    if e2e:
        lines += [
            "## End to end (per sequence; ratios from this run)",
            "",
            "| model | method | L | B | ms / seq | target calls | head calls | tokens / target call | ms / round | x vs (c) sequential | x vs (c-c) compiled sequential | x vs (b) paper ref |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def f(x, fmt="{:.2f}"):
            return "" if x is None else fmt.format(x)

        for r in e2e:
            lines.append(
                f"| {r['model']} | {r['method']}: {r['label']} | {r['L']} | {r['B']} | "
                f"{r['per_seq_s'] * 1e3:.1f} | {r['calls_per_seq']:.1f} | "
                f"{r['draft_calls_per_seq']:.1f} | {r['tokens_per_call']:.2f} | "
                f"{r['ms_per_round']:.2f} | {f(r['speedup_vs_c'])} | {f(r.get('speedup_vs_c-c'))} | "
                f"{f(r['speedup_vs_b'], '{:.1f}')} |"
            )
    if calls:
        lines += [
            "",
            f"## Per call ({meta['per_call_config']}, L=512, random weights)",
            "",
            "| backend | call | B | query rows | ms / call |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['backend']} | {c['kind']} | {c['B']} | {c['Q']} | {c['ms']:.2f} |" for c in calls
        ]
    for key in ("device_check", "graph_check"):
        if meta.get(key):
            lines += ["", f"{key}: {meta[key]}"]
    return "\n".join(lines) + "\n"


def plot(e2e: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    groups = sorted({(r["model"], r["L"], r["B"]) for r in e2e})
    meths = list(dict.fromkeys(r["method"] for r in e2e))
    fig = Figure(figsize=(max(7, 1.2 * len(groups) * len(meths) / 3), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(meths)
    by = {(r["model"], r["method"], r["L"], r["B"]): r for r in e2e}
    for i, m in enumerate(meths):
        xs, ys = [], []
        for j, (model, L, B) in enumerate(groups):
            r = by.get((model, m, L, B))
            if r is not None and r.get("speedup_vs_c"):
                xs.append(j + i * width)
                ys.append(r["speedup_vs_c"])
        ax.bar(xs, ys, width, label=m)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m} L={L} B={B}" for m, L, B in groups], fontsize=8)
    ax.set_ylabel("speed vs engine sequential (x)")
    ax.set_title("Exact sampling on trained models: speed relative to engine + Sequential")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "k": args.k,
        "head_k": args.head_ks,
        "rate": args.rate,
        "lengths": args.lengths,
        "graphs": device.type == "cuda",
        "per_call_config": args.per_call,
        "args": vars(args),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "models": [],
    }
    e2e: list[dict] = []
    for name in [m for m in args.models.split(",") if m]:
        net, tokenizer, forbidden, desc, head = load_net(name)
        net = net.to(device)
        meta["models"].append(
            {
                "name": name,
                "desc": desc,
                "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
                "head_params_m": sum(p.numel() for p in head.parameters()) / 1e6 if head else None,
                "trained_max_length": getattr(net.config, "assd_max_length", None),
            }
        )
        if not args.skip_reference and not meta.get("device_check"):
            meta["device_check"] = device_check(net, device, dtype)
            print("device check:", meta["device_check"], flush=True)
        if device.type == "cuda" and name == args.models.split(",")[0]:
            meta["graph_check"] = graph_check(net, forbidden, head, device, dtype, tokenizer, args)
            print("graph check (graph tokens == eager tokens):", meta["graph_check"], flush=True)
        if not args.profile_only:
            e2e += end_to_end(args, name, net, tokenizer, forbidden, head, device, dtype)
        if args.profile:
            profile_rounds(
                args, net, forbidden, head, device, dtype, out / f"profile_{Path(name).name}.txt"
            )
        (out / "bench_speed.json").write_text(
            json.dumps({"meta": meta, "end_to_end": e2e, "per_call": []}, indent=1)
        )
    calls = per_call(args, device, dtype) if args.per_call != "none" else []
    (out / "bench_speed.json").write_text(
        json.dumps({"meta": meta, "end_to_end": e2e, "per_call": calls}, indent=1)
    )
    md = markdown(meta, e2e, calls)
    (out / "bench_speed.md").write_text(md)
    if e2e:
        plot(e2e, out / "bench_speed.png")
    print(md)


if __name__ == "__main__":
    main()
