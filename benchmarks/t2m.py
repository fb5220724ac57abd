"""T2M-GPT token prior: greedy sampling speed of T2MGPT (KV cache on / off) and T2M-GPT's own
sampler at the same size, on this machine's CPU.

    uv run python benchmarks/t2m.py [--reference DIR] [--threads 2] [--paper]

``--reference DIR`` (or env ``T2M_GPT_REF``) is a checkout of Mael-zys/T2M-GPT (the folder
holding ``models/t2m_trans.py``); without it only our rows are printed. Both models hold the
same weights (ours loaded from the reference's state dict), with the End row of the output head
zeroed so that no sequence stops early: every motion is a full block of ``block_size - 1``
codes. Prints tokens/s (batch x codes / seconds), seconds per generated motion, the speed-up
over the reference sampler, and whether the codes equal the reference's. Each row is the best
of ``--repeats`` runs (3). The default size (``small``: 8 blocks of width 256, batches 1 and
16) runs in about two minutes; ``--paper`` adds the README size (18 blocks of width 1024,
228 M parameters) at batch 1, about 90 s more.

At batch 1 and small width each step of either sampler is bound by reading every weight once
(a matrix-vector product for T2MGPT, a thin matrix product over the prefix for the reference),
and by per-call overhead: T2MGPT's cached step therefore runs its blocks as plain functional
calls with q, k and v in one product. The gain grows with the width and the batch, where the
reference's O(L^2) arithmetic dominates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from motion_tokenizers.priors import T2MGPT

SIZES = {
    "small": dict(
        num_vq=512, embed_dim=256, clip_dim=512, block_size=51, num_layers=4, n_head=8, fc_rate=4
    ),
    "paper": dict(
        num_vq=512, embed_dim=1024, clip_dim=512, block_size=51, num_layers=9, n_head=16, fc_rate=4
    ),
}


def _reference_class(folder: str | None):
    if not folder:
        return None
    path = Path(folder)
    if not (path / "models" / "t2m_trans.py").is_file():
        raise SystemExit(f"{path}: no models/t2m_trans.py (expected a T2M-GPT checkout)")
    sys.path.insert(0, str(path))
    from models.t2m_trans import Text2Motion_Transformer

    return Text2Motion_Transformer


def _models(size: str, ref_cls):
    cfg = SIZES[size]
    torch.manual_seed(0)
    if ref_cls is None:
        ours, ref = T2MGPT(**cfg, drop_out_rate=0.0).eval(), None
    else:
        ref = ref_cls(**cfg, drop_out_rate=0.0).eval()
        ours = T2MGPT.from_reference_state_dict(
            ref.state_dict(), n_head=cfg["n_head"], drop_out_rate=0.0
        )
    with torch.no_grad():  # End never wins: every motion is a full block
        ours.head.weight[ours.end_id] = 0
        if ref is not None:
            ref.trans_head.head.weight[ours.end_id] = 0
    return ours, ref


def _best(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=os.environ.get("T2M_GPT_REF"))
    # one thread: at these sizes a second one mostly waits, and on a shared box its spinning
    # made every sampler 5-8x slower
    parser.add_argument("--threads", type=int, default=1)
    # best of 3: a single run on a shared box is often a slow outlier
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--paper", action="store_true", help="also the README size, batch 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref_cls = _reference_class(args.reference)
    plan = [("small", b, args.repeats) for b in args.batches]
    if args.paper:
        plan.append(("paper", 1, 1))
    print(
        f"torch {torch.__version__}, {args.threads} threads, greedy, full block (50 codes); "
        f"reference: {args.reference or 'not given'}"
    )
    print(
        f"{'size':<6} {'params':>7} {'batch':>5} {'sampler':<20} {'tokens/s':>9} "
        f"{'s/motion':>9} {'speed-up':>8} {'same codes':>10}"
    )
    for size, batch, repeats in plan:
        ours, ref = _models(size, ref_cls)
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        cond = torch.randn(batch, ours.clip_dim, generator=torch.Generator().manual_seed(1))
        rows = [
            ("T2MGPT, KV cache", lambda o=ours, c=cond: o.sample(c)[0]),
            ("T2MGPT, no cache", lambda o=ours, c=cond: o.sample(c, use_cache=False)[0]),
        ]
        if ref is not None:
            # the reference draws a 51st code and drops it; T2MGPT stops at 50
            rows.append(("T2M-GPT reference", lambda r=ref, c=cond: r.sample(c, False)))
        with torch.inference_mode():
            ours.sample(cond, max_tokens=2)  # warm-up: oneDNN primitive caches
        timed = [(name, *_best(fn, repeats)) for name, fn in rows]
        base = timed[-1][1] if ref is not None else None
        want = timed[-1][2]
        for name, seconds, codes in timed:
            n_tok = codes.shape[0] * codes.shape[1]
            speed = f"{base / seconds:.1f}x" if base else "-"
            same = "yes" if torch.equal(codes, want) else "NO"
            print(
                f"{size:<6} {params:>6.1f}M {batch:>5} {name:<20} {n_tok / seconds:>9.0f} "
                f"{seconds / batch:>9.3f} {speed:>8} {same:>10}"
            )


if __name__ == "__main__":
    main()
