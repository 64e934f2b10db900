"""Speed of exact AS-ARM sampling: Hugging Face reference vs the KV-cached engine, one machine.

    python evals/bench_speed.py --device cuda --out /tmp/bench            # GPU, paper protocol
    python evals/bench_speed.py --device cpu --lengths 512 --n-seqs 2 --skip-reference --threads 1

End to end (same prompts, orders and seeds for every method): (a) reference + Sequential,
(b) reference + paper ASSD(k), (c) engine + Sequential, (d) engine + paper ASSD(k),
(e) engine + ASSD(k, bonus) and engine + ASSD(k, one_call); optionally the engine without
CUDA graphs. Protocol: the paper's (L=512, 26 visible at random, 486 masked, k=5) and shorter
lengths; batch 1 and larger. Per call: one call of each kind on an XLNet-base-size config with
random weights (timings only). Writes bench_speed.json, bench_speed.md and bench_speed.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import assd  # noqa: E402
from assd.backends import XLNetEngine, XLNetReference  # noqa: E402

DEFAULT_DATA = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/text/wiki_valid.jsonl.xz"
)
BASE = dict(vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072)  # XLNet-base size
SMALL = dict(vocab_size=8000, d_model=256, n_layer=6, n_head=4, d_inner=2048)  # ~10M parameters
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="prose", help="'prose' (embedded demo model), a directory, or "
                   "'random-small' / 'random-base' (random weights: timings only)")  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32",
                   choices=sorted(DTYPES), help="engine dtype (the reference always runs float32)")  # fmt: skip
    p.add_argument("--lengths", type=_ints, default=[512, 128])
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8])
    p.add_argument("--n-seqs", type=int, default=8, help="sequences per (length, batch size)")
    p.add_argument("--ref-seqs", type=int, default=None,
                   help="sequences for the reference methods (default: one batch)")  # fmt: skip
    p.add_argument(
        "--rate", type=float, default=0.95, help="masking rate (0.95: 26 of 512 visible)"
    )
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument(
        "--eager-too", action="store_true", help="also time the engine without CUDA graphs"
    )
    p.add_argument("--ablate-reuse", action="store_true",
                   help="also time the engine recomputing proposal states instead of reusing them")  # fmt: skip
    p.add_argument(
        "--per-call", default="base", help="'base', 'small' or 'none': per-call timing config"
    )
    p.add_argument("--per-call-reps", type=int, default=30)
    p.add_argument(
        "--data", default=str(DEFAULT_DATA), help="jsonl(.xz) with a 'text' field for prompts"
    )
    p.add_argument(
        "--prompts", default=None, help="json list of token-id lists (from --save-prompts)"
    )
    p.add_argument(
        "--save-prompts", default=None, help="write the prompt token ids used to this json"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler over rounds of engine + one_call ASSD (writes profile.txt)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="evals/results/bench_speed")
    return p.parse_args(argv)


# -- models and prompts --------------------------------------------------------------------------
def random_net(cfg: dict, seed: int = 0):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    return XLNetLMHeadModel(XLNetConfig(**cfg, dropout=0.0)).eval()


def load_net(name: str):
    """-> (HF net float32 on CPU, tokenizer or None, forbidden ids, description)."""
    if name in ("random-small", "random-base"):
        net = random_net(SMALL if name == "random-small" else BASE)
        return net, None, (), f"{name} (random weights)"
    loaded = assd.load(name, backend="reference", device="cpu")
    return loaded.model.net, loaded.tokenizer, loaded.model.forbidden_ids, name


def prompt_pool(args, tokenizer, vocab: int, forbidden, n: int, L: int) -> list[list[int]]:
    """n token sequences of length L: real text chunks when a tokenizer and data exist."""
    if args.prompts:
        seqs = json.loads(Path(args.prompts).read_text())
        seqs = [s[:L] for s in seqs if len(s) >= L]
        if len(seqs) >= n:
            return seqs[:n]
    if tokenizer is not None and Path(args.data).exists():
        out: list[list[int]] = []
        opener = lzma.open if args.data.endswith(".xz") else open
        with opener(args.data, "rt") as f:
            for line in f:
                ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
                out += [ids[i : i + L] for i in range(0, len(ids) - L + 1, L)]
                if len(out) >= n:
                    return out[:n]
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


def run_method(model, sampler, batches, device, warm: int | None) -> dict:
    """Warm up (first batch: `warm` rounds, None = all), then time every batch to completion."""
    gen = assd.generate(model, batches[0], sampler, rng(999, device), trace=False)
    for i, _ in enumerate(gen):
        if warm is not None and i + 1 >= warm:
            break
    del gen
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    nfe, gen_tokens, wall = [], 0, 0.0
    for j, b in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        res = assd.sample(model, b, sampler, rng(j, device), trace=False)
        sync(device)
        wall += time.perf_counter() - t0
        nfe += [r.nfe for r in res]
        gen_tokens += sum(r.n_generated for r in res)
    n = len(nfe)
    return {
        "n_seqs": n,
        "wall_s": wall,
        "per_seq_s": wall / n,
        "calls_per_seq": statistics.mean(nfe),
        "tokens_per_call": gen_tokens / sum(nfe),
        "tokens_per_s": gen_tokens / wall,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else None,
    }


def methods(args, net, forbidden, device, dtype):
    """(key, label, model, sampler, is_reference) for every method of the comparison."""
    k = args.k
    ref = XLNetReference(net, forbidden_ids=forbidden)
    eng = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False)
    out = []
    if not args.skip_reference:
        out += [("a", "reference + Sequential", ref, assd.Sequential(), True),
                ("b", f"reference + ASSD(k={k}) paper", ref, assd.ASSD(k), True)]  # fmt: skip
    out += [
        ("c", "engine + Sequential", eng, assd.Sequential(), False),
        ("d", f"engine + ASSD(k={k}) paper", eng, assd.ASSD(k), False),
        ("e-bonus", f"engine + ASSD(k={k}, bonus)", eng, assd.ASSD(k, bonus=True), False),
        ("e-onecall", f"engine + ASSD(k={k}, one_call)", eng, assd.ASSD(k, one_call=True), False),
    ]
    if args.eager_too and eng.graphs:
        eager = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False, graphs=False)
        out += [("c-eager", "engine (no graphs) + Sequential", eager, assd.Sequential(), False),
                ("e-onecall-eager", f"engine (no graphs) + ASSD(k={k}, one_call)", eager,
                 assd.ASSD(k, one_call=True), False)]  # fmt: skip
    if args.ablate_reuse:
        fresh = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False, reuse_proposals=False)
        out += [("d-noreuse", f"engine (recompute proposals) + ASSD(k={k}) paper", fresh,
                 assd.ASSD(k), False),
                ("e-bonus-noreuse", f"engine (recompute proposals) + ASSD(k={k}, bonus)", fresh,
                 assd.ASSD(k, bonus=True), False)]  # fmt: skip
    return out


def end_to_end(args, net, tokenizer, forbidden, device, dtype) -> list[dict]:
    rows = []
    vocab = net.config.vocab_size
    meths = methods(args, net, forbidden, device, dtype)
    for L in args.lengths:
        for B in args.batch_sizes:
            n = max(args.n_seqs, B)
            seqs = prompt_pool(args, tokenizer, vocab, forbidden, n, L)
            batches = make_batches(seqs, L, B, args.rate, args.seed)
            n_ref = args.ref_seqs or B
            for key, label, model, sampler, is_ref in tqdm(meths, desc=f"L={L} B={B}"):
                use = batches[: max(1, -(-n_ref // B))] if is_ref else batches
                r = run_method(model, sampler, use, device, warm=3 if is_ref else None)
                if not is_ref:
                    r["cache_bytes"] = model.open(batches[0].to(device)).cache_bytes
                rows.append({"method": key, "label": label, "L": L, "B": B, **r})
                print(f"  {key:16s} L={L:4d} B={B:2d} {r['per_seq_s'] * 1e3:9.1f} ms/seq "
                      f"{r['calls_per_seq']:6.1f} calls {r['tokens_per_call']:.2f} tok/call", flush=True)  # fmt: skip
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict]) -> None:
    by = {(r["method"], r["L"], r["B"]): r for r in rows}
    for r in rows:
        for base in ("a", "b", "c"):
            ref = by.get((base, r["L"], r["B"]))
            r[f"speedup_vs_{base}"] = ref["per_seq_s"] / r["per_seq_s"] if ref else None


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
def profile_rounds(args, net, forbidden, device, dtype, path: Path) -> None:
    """Where a round's time goes: torch.profiler over 40 rounds (after 10) of the fastest variant."""
    from torch.profiler import ProfilerActivity, profile, record_function

    L = args.lengths[0]
    eng = XLNetEngine.from_hf(net, forbidden, dtype=dtype, check=False)
    seqs = prompt_pool(args, None, net.config.vocab_size, forbidden, 1, L)
    batch = make_batches(seqs, L, 1, args.rate, args.seed)[0]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    text = []
    for sampler in (assd.ASSD(args.k, one_call=True), assd.Sequential()):
        gen = assd.generate(eng, batch, sampler, rng(0, device), trace=False)
        for _ in zip(range(10), gen):
            pass
        sync(device)
        t0 = time.perf_counter()
        rounds = 0
        with profile(activities=acts) as prof:
            for _ in range(40):
                with record_function("round"):
                    if next(gen, None) is None:
                        break
                rounds += 1
            sync(device)
        dt = (time.perf_counter() - t0) / max(rounds, 1)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        text += [f"== {sampler.name}: {dt * 1e3:.2f} ms per round (under the profiler)",
                 prof.key_averages().table(sort_by="cpu_time_total", row_limit=25),
                 prof.key_averages().table(sort_by=sort, row_limit=15)]  # fmt: skip
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
    lines = [f"# Speed benchmark ({meta['device_name']}, engine {meta['dtype']})", "",
             f"Model: {meta['model']} ({meta['params_m']:.1f}M parameters); k={meta['k']}, "
             f"masking rate {meta['rate']}; torch {meta['torch']}; threads {meta['threads']}."]  # fmt: skip
    if meta.get("trained_max_length"):
        lines += [f"The model was trained on sequences of up to {meta['trained_max_length']} tokens; "
                  "longer rows run (relative positions) but their acceptance is only indicative."]  # fmt: skip
    lines += [""]
    if e2e:
        lines += ["## End to end (per sequence)", "",
                  "| method | L | B | ms / seq | calls / seq | tokens / call | tokens / s | peak mem MiB | KV cache MiB | x vs (a) | x vs (b) | x vs (c) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in e2e:

            def f(x, fmt="{:.1f}"):
                return "" if x is None else fmt.format(x)

            lines.append(
                f"| {r['method']}: {r['label']} | {r['L']} | {r['B']} | {r['per_seq_s'] * 1e3:.1f} | "
                f"{r['calls_per_seq']:.1f} | {r['tokens_per_call']:.2f} | {r['tokens_per_s']:.0f} | "
                f"{f(r['peak_mem_bytes'] and r['peak_mem_bytes'] / 2**20)} | "
                f"{f(r.get('cache_bytes') and r['cache_bytes'] / 2**20)} | "
                f"{f(r['speedup_vs_a'])} | {f(r['speedup_vs_b'])} | {f(r['speedup_vs_c'], '{:.2f}')} |"
            )
    if calls:
        lines += ["", f"## Per call ({meta['per_call_config']}, L=512, random weights)", "",
                  "| backend | call | B | query rows | ms / call |", "|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {c['backend']} | {c['kind']} | {c['B']} | {c['Q']} | {c['ms']:.2f} |" for c in calls
        ]
    if meta.get("device_check"):
        lines += ["", f"Device check (max abs logit diff vs reference): {meta['device_check']}"]
    return "\n".join(lines) + "\n"


def plot(e2e: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["L"], r["B"]) for r in e2e})
    meths = list(dict.fromkeys(r["method"] for r in e2e))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings) * len(meths) / 3), 4))
    width = 0.8 / len(meths)
    by = {(r["method"], r["L"], r["B"]): r for r in e2e}
    for i, m in enumerate(meths):
        xs, ys = [], []
        for j, s in enumerate(settings):
            if (m, *s) in by:
                xs.append(j + i * width)
                ys.append(by[(m, *s)]["per_seq_s"] * 1e3)
        ax.bar(xs, ys, width, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(settings))])
    ax.set_xticklabels([f"L={L}, B={B}" for L, B in settings])
    ax.set_yscale("log")
    ax.set_ylabel("ms per sequence (log)")
    ax.set_title("Exact AS-ARM sampling: wall-clock per sequence")
    ax.legend(fontsize=7)
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
    net, tokenizer, forbidden, desc = load_net(args.model)
    net = net.to(device)
    if args.save_prompts:
        seqs = prompt_pool(
            args,
            tokenizer,
            net.config.vocab_size,
            forbidden,
            max(args.n_seqs, max(args.batch_sizes)),
            max(args.lengths),
        )
        Path(args.save_prompts).write_text(json.dumps(seqs))
    meta = {
        "model": desc,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "k": args.k,
        "rate": args.rate,
        "per_call_config": args.per_call,
        "trained_max_length": getattr(net.config, "assd_max_length", None),
        "args": vars(args),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not args.skip_reference:
        meta["device_check"] = device_check(net, device, dtype)
        print("device check:", meta["device_check"], flush=True)
    e2e = end_to_end(args, net, tokenizer, forbidden, device, dtype)
    calls = per_call(args, device, dtype) if args.per_call != "none" else []
    if args.profile:
        profile_rounds(args, net, forbidden, device, dtype, out / "profile.txt")
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
