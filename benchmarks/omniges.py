"""Omniges / OmniFlow MMDiT speed on this machine (CPU by default); prints tables.

    uv run python benchmarks/omniges.py [--threads N] [--repeats R] [--compile] [--quick]
        [--tables mmdit,train,generate] [--codecs tiny,full] [--train-steps N] [--gen-repeats N]

Tables are printed as markdown, with the thread count and the load average (the machine may be
shared: every time is an upper bound). ``--quick`` (3.5-7 min on 2 busy cores) times 1 MMDiT
repeat, 2 training steps and one generation per task of 4 measured Euler steps.

Table 1 (``mmdit_table``): MMDiT forward and forward+backward at a mid size (8 blocks, 512 wide,
8 heads; gesture/audio/text streams of 128/256/32 tokens, batch 8), in both layouts (our
default: RMS q/k norm, rotary; OmniFlow's: one shared q/k LayerNorm, learned tables,
per-stream time + pooled embeddings), next to this CPU's fp32 matmul rate measured in the same
run on a matmul of the model's own shape (tokens x 512 @ 512 x 2048, the feed-forward's). FLOPs
are counted by ``torch.utils.flop_counter``; "% mm" is achieved GFLOP/s over the matmul's.
``--compile`` adds torch.compile rows (optional; the library never compiles by itself).

On the 2-core development CPU (shared, 1 thread) one run gave: matmul 85 GFLOP/s; ours
fwd 57% / fwd+bwd 74%, OmniFlow layout fwd 74% / fwd+bwd 74%. A profile of fwd+bwd puts 74%
of the time in matmuls, 11% in SDPA (flash kernel, fwd+bwd) and under 10% in elementwise
ops, so what is left is the matmul efficiency of the per-stream shapes (a 32-token stream).

Table 2 (``train_table``): one ``OmnigesObjective`` step (forward, backward, AdamW) of the
mid MMDiT (``SIZES["mid"]``) on B=8 windows of the default geometry: 64 frames -> 16 gesture
tokens of 512-d (GestureLSM's four tokenizers), 2.13 s of audio -> AudioLDM2-VAE latents
(8, 54, 16) -> 216 tokens of 2x2 patches (32-d), 8 or 32 text tokens of 64-d (the default
TextVAE); tasks in round robin, random weights and inputs; median of N steps.

Table 3 (``generate_table``): ``OmnigesPipeline`` on one window per task (t2g g2t a2g g2a t2a
a2t) with the mid MMDiT and the ``tiny`` codecs (test sizes) and/or the ``full`` ones
(GestureLSM's RVQ-VAEs, AudioLDM2's VAE and vocoder configs, the default TextVAE), all with
random weights (speed only): encode the condition, 28 Euler steps with guidance 2 (one
batched B=2 forward per step), decode; the stages are timed by wrapping the pipeline's
``encode_*`` / ``decode_*`` methods, sampling is the rest.

Runs with ``--threads 1`` on the 2-core development CPU, load average 4.9-5.0 (shared; the
matmul rate read 79 GFLOP/s in the same runs, 38 in an earlier busier one where every figure
below was about twice as long): training step 6.3 s with 8 text tokens (319 GFLOP, 51
GFLOP/s), 6.4 s with 32 (354 GFLOP), median of 6; generation, 28 measured steps, full codecs:
0.53-0.59 s per Euler step (every task runs the same shapes), 15-16.5 s of sampling per
window; encoding audio takes 1.0-1.2 s, decoding it 5.2-5.7 s (VAE decoder and a 1024-channel
HiFi-GAN), text and motion under 0.5 s either way, so a window costs 16-21 s; the tiny codecs
take under 0.1 s. ``--quick``'s 4-step extrapolation agreed with the 28-step run (0.52-0.61 s
per step). The MMDiT is the cost of every task except those that make audio at full size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# this script shares the package's name: keep its own folder off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from flow_backbones import MMDiT, StreamSpec  # noqa: E402
from gesture_apps.systems.omniges.audio import MEL, AudioCodec  # noqa: E402
from gesture_apps.systems.omniges.config import (  # noqa: E402
    TASKS,
    OmnigesModelConfig,
    OmnigesRecipeConfig,
    OmnigesSampleConfig,
)
from gesture_apps.systems.omniges.model import (  # noqa: E402
    OmnigesObjective,
    StreamGeometry,
    build_mmdit,
    make_loss,
)
from gesture_apps.systems.omniges.pipeline import OmnigesPipeline  # noqa: E402
from gesture_apps.systems.omniges.text_vae import TextVAE  # noqa: E402
from gesture_data import Normalizer  # noqa: E402
from gesture_data.datasets.synthetic import sentences  # noqa: E402
from gesture_data.motion import Motion  # noqa: E402
from motion_tokenizers import BEAT2_PART_DIMS, MultiPartTokenizer  # noqa: E402

MID = dict(dim=512, depth=8, num_heads=8)
TOKENS = {"gesture": 128, "audio": 256, "text": 32}
WIDTH = {"gesture": 512, "audio": 32, "text": 384}
BATCH = 8


def timeit(fn, repeats: int, min_seconds: float = 0.0, warmup: bool = True) -> float:
    """Best wall time of at least ``repeats`` calls (and ``min_seconds`` in all) after one
    warm-up call (``warmup=False``: the caller has just made one): the best, not the mean,
    because a shared CPU only ever adds time."""
    if warmup:
        fn()
    best, spent, n = float("inf"), 0.0, 0
    while n < repeats or spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


def flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def matmul_rate(m: int, k: int, n: int, repeats: int) -> float:
    """fp32 GFLOP/s of ``torch.mm`` at ``(m, k) @ (k, n)``."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    s = timeit(lambda: torch.mm(a, b), repeats, min_seconds=2.0)
    return 2 * m * k * n / s / 1e9


def mid_models() -> dict[str, MMDiT]:
    ours = MMDiT({n: StreamSpec(WIDTH[n], max_len=TOKENS[n]) for n in TOKENS}, **MID)
    omniflow = MMDiT(
        {
            "gesture": StreamSpec(WIDTH["gesture"], max_len=TOKENS["gesture"], pos="learned"),
            "audio": StreamSpec(WIDTH["audio"], max_len=TOKENS["audio"], pos="learned"),
            "text": StreamSpec(
                WIDTH["text"], pos="none", context_only_last=True, head_width=WIDTH["text"]
            ),
        },
        **MID,
        qk_norm="layer_norm",
        qk_norm_eps=1e-5,
        pooled_dim=64,
        pooled_per_stream=True,
        time_input="sigma",
    )
    return {"ours (rms, rope)": ours, "OmniFlow layout": omniflow}


def mmdit_table(repeats: int, compile_too: bool = False) -> list[tuple]:
    """Rows: matmul reference, then each mid-size model forward / forward+backward."""
    L = sum(TOKENS.values())
    shape = (BATCH * L, MID["dim"], 4 * MID["dim"])
    peak = matmul_rate(*shape, repeats)
    rows = [[f"fp32 torch.mm ({shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]})", "", "", 0, ""]]
    g = torch.Generator().manual_seed(0)
    x = {n: torch.randn(BATCH, TOKENS[n], WIDTH[n], generator=g) for n in TOKENS}
    t = {n: torch.rand(BATCH, generator=g) for n in TOKENS}
    pooled = torch.randn(BATCH, 64, generator=g)
    variants = list(mid_models().items())
    if compile_too:
        variants += [(f"{k} + torch.compile", torch.compile(m)) for k, m in variants]
    for name, model in variants:
        kw = {"pooled": pooled} if model.pooled_dim else {}

        def call(model=model, kw=kw):
            return model(x, t, **kw)

        def step(model=model, call=call):
            model.zero_grad(set_to_none=True)
            sum(v.square().mean() for v in call().values()).backward()

        model.eval()
        with torch.no_grad():
            f = flops(call)  # the warm-up call too
            s = timeit(call, repeats, warmup=False)
        rows.append((f"{name} fwd", f"{1e3 * s:.0f}", f"{f / 1e9:.1f}", f / s / 1e9, ""))
        model.train()
        f = flops(step)
        s = timeit(step, repeats, warmup=False)
        rows.append((f"{name} fwd+bwd", f"{1e3 * s:.0f}", f"{f / 1e9:.1f}", f / s / 1e9, ""))
        # other processes come and go: the reference is the best matmul rate seen in the run
        peak = max(peak, matmul_rate(*shape, repeats))
    rows[0][3] = peak
    rows = [(*r[:3], f"{r[3]:.1f}", f"{100 * r[3] / peak:.0f}%") for r in rows]
    return rows


# ----- Omniges: training step and generation per task ------------------------------------------

POSE_LENGTH, FPS = 64, 30.0  # the omniges presets' window: 64 frames = 2.13 s at 30 fps
PATCH = 2  # 2x2 audio-latent patches (train.prepare)
SAMPLE = OmnigesSampleConfig()  # 28 Euler steps, shift 3, guidance 2
PROMPT = "people think about music and then they move their hands"


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """Median and all wall times of ``repeats`` calls (no warm-up here: callers warm up)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def window_samples() -> int:
    return round(POSE_LENGTH * MEL.sample_rate / FPS)


def audio_latent_shape() -> tuple[int, int, int]:
    """AudioCodec latents ``(8, T/4, 16)`` of one window, ``T = 8 * ceil(S / 1280)`` mel frames
    (the codec pads the wave with silence to whole 1280-sample chunks)."""
    frames = MEL.frames_per_latent_pair * math.ceil(window_samples() / MEL.chunk)
    return (8, frames // 4, MEL.n_mels // 4)


def window_geometry(gesture_dim: int, factor: int, text_tokens: int, text_dim: int):
    """The stream geometry of one window, as ``train.prepare`` derives it from the codecs;
    the statistics are (0, 1) since every input here is unit-scale random."""
    return StreamGeometry(
        gesture_tokens=POSE_LENGTH // factor,
        gesture_dim=gesture_dim,
        audio_latent=audio_latent_shape(),
        audio_patch=PATCH,
        text_tokens=text_tokens,
        text_dim=text_dim,
        gesture_token_seconds=factor / FPS,
        audio_row_seconds=4 * MEL.hop_length / MEL.sample_rate * PATCH,
        stats={"gesture": (0.0, 1.0), "audio": (0.0, 1.0), "text": (0.0, 1.0)},
    )


def mid_recipe() -> OmnigesRecipeConfig:
    return OmnigesRecipeConfig(model=OmnigesModelConfig(size="mid"))


def train_table(repeats: int, text_tokens: tuple[int, ...]) -> list[tuple]:
    """One row per text length: seconds per ``OmnigesObjective`` step (forward, backward,
    AdamW) of the mid MMDiT on a batch of default-geometry windows (paper-size gesture
    tokenizer: 16 x 512; AudioLDM2 VAE: 2x2 patches of 8 x 54 x 16 latents; default TextVAE:
    64-d tokens). The loss cycles the six tasks (round robin), so ``repeats`` >= 6 covers each
    task once; all three streams go through the network whatever the task."""
    cfg = mid_recipe()
    rows = []
    for n_text in text_tokens:
        geo = window_geometry(512, 4, n_text, 64)
        torch.manual_seed(0)
        objective = OmnigesObjective(build_mmdit(cfg, geo), geo, make_loss(cfg)).train()
        opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        batch = {
            "gesture": torch.randn(BATCH, geo.gesture_tokens, geo.gesture_dim, generator=g),
            "audio": torch.randn(BATCH, geo.audio_tokens, geo.audio_dim, generator=g),
            "text": torch.randn(BATCH, n_text, geo.text_dim, generator=g),
        }

        def step(objective=objective, opt=opt, batch=batch):
            opt.zero_grad(set_to_none=True)
            loss, _ = objective(batch)
            loss.backward()
            opt.step()

        f = flops(step)  # also the warm-up step (AdamW's state is allocated here)
        s, times = median_time(step, repeats)
        tokens = f"{geo.gesture_tokens}/{geo.audio_tokens}/{n_text}"
        params = sum(p.numel() for p in objective.parameters()) / 1e6
        spread = f"{min(times):.2f}-{max(times):.2f}"
        rows.append(
            (tokens, f"{params:.1f}", f"{s:.2f}", spread, f"{f / 1e9:.0f}", f"{f / s / 1e9:.1f}")
        )
    return rows


def random_pipeline(codecs: str) -> OmnigesPipeline:
    """An ``OmnigesPipeline`` of random weights: the mid MMDiT and the ``"tiny"`` codecs (the
    test sizes) or the ``"full"`` ones (GestureLSM's four RVQ-VAEs, AudioLDM2's VAE and
    vocoder, the default TextVAE: MiniLM, 6-layer Q-Former, 6-layer GPT-2)."""
    torch.manual_seed(0)
    if codecs == "tiny":
        tok, codec, text_vae = MultiPartTokenizer.tiny(), AudioCodec.tiny(), TextVAE.tiny()
    else:
        tok, codec, text_vae = (
            MultiPartTokenizer.gesturelsm(),
            AudioCodec.audioldm2().eval(),
            TextVAE(),
        )
    text_vae.fit_tokenizer(sentences(500))  # the decoder needs a vocabulary to print
    # the face is left unnormalised (GestureLSM): statistics for the other parts only
    stats = {p: (np.zeros(d), np.ones(d)) for p, d in BEAT2_PART_DIMS.items() if p != "face"}
    geo = window_geometry(
        tok.latent_dim, tok.downsample_factor, text_vae.n_tokens, text_vae.vae_dim
    )
    spec = {
        "parts": list(tok.part_names),
        "pose_length": POSE_LENGTH,
        "fps": FPS,
        "sample_rate": MEL.sample_rate,
        "tasks": list(TASKS),
        "text_predicts_x1": True,
        "sample": {"steps": SAMPLE.steps, "shift": SAMPLE.shift, "guidance": SAMPLE.guidance},
    }
    return OmnigesPipeline(
        mmdit=build_mmdit(mid_recipe(), geo),
        geometry=geo,
        tokenizer=tok.eval(),
        normalizer=Normalizer(stats),
        codec=codec.eval(),
        text_vae=text_vae,
        spec=spec,
    )


def window_conditions(seed: int = 0) -> dict[str, dict]:
    """One window of each condition: a prompt, 2.13 s of noise-like audio, a random motion."""
    rng = np.random.default_rng(seed)
    wave = (0.1 * rng.standard_normal(window_samples())).astype(np.float32)
    poses = (0.2 * rng.standard_normal((POSE_LENGTH, 165))).astype(np.float32)
    motion = Motion(poses, expressions=rng.standard_normal((POSE_LENGTH, 100)).astype(np.float32))
    return {"t": {"prompt": PROMPT}, "a": {"audio": wave}, "g": {"gesture": motion}}


STAGES = ("encode_text", "encode_audio", "encode_motion", "decode_text", "decode_audio",
          "decode_motion")  # fmt: skip


def _clocked(fn, stage: str, spent: dict[str, float]):
    """``fn`` adding its wall time to ``spent[stage]``."""

    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[stage] += time.perf_counter() - t0
        return out

    return wrapped


def timed_task(pipe: OmnigesPipeline, task: str, cond: dict, steps: int) -> dict[str, float]:
    """Run ``pipe(task, **cond)`` once; seconds spent in the pipeline's encode_* / decode_*
    methods (wrapped on the instance for this call), the rest is sampling (``steps`` Euler
    steps of the MMDiT, the per-step bookkeeping included), and the MMDiT's forward batch."""
    spent = {"encode": 0.0, "decode": 0.0}
    batches: list[int] = []
    for name in STAGES:
        setattr(pipe, name, _clocked(getattr(pipe, name), name.split("_")[0], spent))
    hook = pipe.mmdit.register_forward_pre_hook(
        lambda m, args: batches.append(next(iter(args[0].values())).shape[0])
    )
    try:
        t0 = time.perf_counter()
        pipe(task, **cond, steps=steps, guidance=SAMPLE.guidance)
        total = time.perf_counter() - t0
    finally:
        hook.remove()
        for name in STAGES:
            delattr(pipe, name)  # back to the class's method
    return {**spent, "sampling": total - spent["encode"] - spent["decode"], "total": total,
            "forwards": len(batches), "batch": max(batches)}  # fmt: skip


def generate_table(codecs: str, repeats: int, steps: int) -> tuple[list[tuple], str]:
    """Per task: seconds for one window end to end (median of ``repeats``), split in stages;
    and the pipeline's :func:`describe` line. Sampling and total are for OmniFlow's 28 steps:
    with fewer measured ``steps`` they are extrapolated from the time per step, which is the
    same at every step (same shapes, one batched forward)."""
    pipe = random_pipeline(codecs)
    conds = window_conditions()
    with torch.no_grad():
        # warm-up: each encoder and each decoder once (first calls allocate), 1 step each
        for task in ("t2g", "g2a", "a2t"):
            pipe(task, **conds[task[0]], steps=1, guidance=SAMPLE.guidance)
    rows = []
    for task in TASKS:
        runs = [timed_task(pipe, task, conds[task[0]], steps) for _ in range(repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        per_step = med["sampling"] / runs[0]["forwards"]
        sampling = per_step * SAMPLE.steps
        rows.append((
            task,
            f"{med['encode']:.2f}",
            f"{sampling:.2f}",
            f"{1e3 * per_step:.0f}",
            f"{med['decode']:.2f}",
            f"{med['encode'] + sampling + med['decode']:.2f}",
            f"{runs[0]['forwards']} x B={runs[0]['batch']}",
        ))  # fmt: skip
    return rows, describe(pipe)


def describe(pipe: OmnigesPipeline) -> str:
    """Parameter counts and token shapes of a pipeline (the table's caption)."""
    m = {
        "gesture tokenizer": pipe.tokenizer,
        "audio VAE": pipe.codec.vae,
        "vocoder": pipe.codec.vocoder,
        "text VAE": pipe.text_vae,  # its trained part: the frozen encoder is not a submodule
        "MMDiT": pipe.mmdit,
    }
    sizes = ", ".join(
        f"{k} {sum(p.numel() for p in v.parameters()) / 1e6:.2f} M" for k, v in m.items()
    )
    g = pipe.geo
    shapes = (f"gesture {g.gesture_tokens}x{g.gesture_dim}, audio {g.audio_tokens}x"
              f"{g.audio_dim}, text {g.text_tokens}x{g.text_dim}")  # fmt: skip
    return f"{sizes}; tokens {shapes}"


def print_table(title: str, head: tuple, rows: list[tuple]) -> None:
    """A markdown table (pads columns so that it also reads as plain text)."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    cells = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    fmt = "| " + " | ".join(cells) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if i else (":" + "-" * (w + 1))
                          for i, w in enumerate(widths)) + "|"  # fmt: skip
    print(f"\n{title}\n")
    print(fmt.format(*head))
    print(rule)
    for r in rows:
        print(fmt.format(*r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3, help="MMDiT table: best of R")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows")
    p.add_argument(
        "--tables",
        default="mmdit,train,generate",
        help="comma-separated subset of mmdit, train, generate",
    )
    p.add_argument("--train-steps", type=int, default=6, help="train table: median of N steps")
    p.add_argument("--gen-repeats", type=int, default=3, help="generate table: median of N")
    p.add_argument(
        "--gen-steps",
        type=int,
        default=SAMPLE.steps,
        help="generate table: Euler steps measured (fewer: 28-step time extrapolated)",
    )
    p.add_argument("--codecs", default="tiny,full", help="generate table: tiny and/or full")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a ~5 min run: 1 MMDiT repeat; 2 training steps, 8 text tokens only; "
        "1 generation per task of 4 measured steps",
    )
    args = p.parse_args()
    if args.quick:
        args.repeats, args.train_steps, args.gen_repeats, args.gen_steps = 1, 2, 1, 4
    tables = {t.strip() for t in args.tables.split(",")}
    unknown = tables - {"mmdit", "train", "generate"}
    if unknown:
        p.error(f"--tables: unknown {sorted(unknown)}; expected mmdit, train, generate")
    codec_sets = [c.strip() for c in args.codecs.split(",")] if "generate" in tables else []
    bad = [c for c in codec_sets if c not in ("tiny", "full")]
    if bad:
        p.error(f"--codecs: expected tiny and/or full, found {bad}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"threads={args.threads}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load} (1/5/15 min) at start: the machine is shared, times are upper "
        "bounds"
    )
    if "mmdit" in tables:
        print_table(
            f"MMDiT mid size ({MID['depth']}x{MID['dim']}, {MID['num_heads']} heads, tokens "
            f"{'/'.join(str(v) for v in TOKENS.values())}, B={BATCH})",
            ("model", "ms (best)", "GFLOP", "GFLOP/s", "% mm"),
            mmdit_table(args.repeats, args.compile),
        )
    if "train" in tables:
        print_table(
            f"Omniges training step, mid MMDiT ({MID['depth']}x{MID['dim']}), B={BATCH}, "
            f"random weights and inputs, tasks in round robin; seconds per step (forward + "
            f"backward + AdamW), median of {args.train_steps} after one warm-up step",
            ("tokens g/a/t", "params (M)", "s/step", "min-max", "GFLOP/step", "GFLOP/s"),
            train_table(args.train_steps, (8,) if args.quick else (8, 32)),
        )
    for codecs in codec_sets:
        rows, caption = generate_table(codecs, args.gen_repeats, args.gen_steps)
        measured = (
            ""
            if args.gen_steps == SAMPLE.steps
            else f" (sampling and total extrapolated from {args.gen_steps} measured steps)"
        )
        print_table(
            f"Omniges generation, one {POSE_LENGTH / FPS:.2f} s window, mid MMDiT, {codecs} "
            f"codecs, random weights (speed only, the outputs are noise); {SAMPLE.steps} Euler "
            f"steps, guidance {SAMPLE.guidance} (conditional and unconditional in one batch); "
            f"seconds, median of {args.gen_repeats}{measured}. {caption}",
            ("task", "encode", "sampling", "ms/step", "decode", "total", "MMDiT calls"),
            rows,
        )
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
