"""OmniHuman speed and memory on this machine (CPU by default); prints tables.

    uv run python benchmarks/omnihuman.py [--threads N] [--quick] [--tables generate,train,params]
        [--sizes demo,tiny,wan] [--teacher-steps N] [--repeats R] [--train-steps N]

Every model has random weights (speed only: the videos are noise). Tables are printed as
markdown with the thread count and the load average (the machine may be shared: every time is
an upper bound). Sizes (``--sizes``):

* ``demo``: 64 x 64 frames at 12.5 fps, 17-frame segments, ``VideoVAE.tiny()`` (base 16, 8
  latent channels: 8 x 8 latents), the DiT of size ``small`` (6 x 256, 1x2x2 patches) with
  the ``omnihuman/omnihuman`` preset's condition sizes scaled down (audio tokens 64-d, pose 8
  channels on 32 x 32 heatmaps);
* ``tiny``: the ``omnihuman/tiny`` preset (32 x 32 frames, 9-frame segments, ``VideoVAE.tiny``
  at base 8, DiT ``tiny`` 2 x 64 with 1x1x1 patches);
* ``wan``: the demo size with the Wan2.1 adapter (``WanBackbone.tiny``: diffusers'
  ``WanTransformer3DModel``, 2 blocks of width 24) in place of the DiT.

Table 1 (generation): ``OmniHumanPipeline.generate`` on one request of three segments (51
frames, 4.08 s) in mode ``audio``: the teacher samples 20 Euler steps with annealed audio and
text guidance (three condition levels in one batched forward per step: all, no audio, no audio
and text), the one-step student 1 step with guidance 1 (one branch). Seconds per generated
second of video, split by wrapping the pipeline's VAE on the instance: ``sampling`` (the
backbone and condition modules, Euler steps), ``decode`` (VAE decode of each segment),
``motion enc`` (VAE encode of the previous segment's last five frames, segments 2 and 3) and
``cond`` (caption through the frozen MiniLM, log-mel features, reference-image encode). Median
of ``--repeats`` after a warm-up call (which also loads MiniLM).

Table 2 (training): one ``OmniHumanObjective`` step (forward, backward, AdamW) on a batch of
8 random segments in the last stage of the seed's schedule (every condition drawn per row:
audio 0.25, pose 0.13, motion frames 0.5; heatmaps drawn on the fly as in training); median of
``--train-steps`` after one warm-up step (which allocates AdamW's state).

Peak memory (both tables) is the process's peak resident set (``VmHWM`` of
``/proc/self/status``, reset through ``/proc/self/clear_refs`` before each measured call;
Linux only) while generating one request or taking one training step; it includes everything
already resident (torch, diffusers, MiniLM: the baseline is printed above the tables), so the
difference between rows is what the model and its activations add.

Table 3 (parameters): the paper-size configurations built on the meta device (no memory):
the DiT at Wan2.1-T2V-1.3B's shape with the ``omnihuman/omnihuman`` preset's condition
modules, ``WanBackbone.wan_1_3b()`` adapted the same way, and ``VideoVAE.wan()``.

A full run takes about 3.5 min (``--quick``: 72 s) on the 2-core development CPU,
shared with four other jobs; ``--threads 1``, load average 2.1-3.3, random weights:

| size / model | model calls | sampling | decode | motion enc |  cond | total | peak MiB | +MiB |
|:-------------|------------:|---------:|-------:|-----------:|------:|------:|---------:|-----:|
| demo teacher |    60 x B=3 |    2.060 |  0.648 |      0.078 | 0.020 | 2.806 |     1137 |  171 |
| demo student |     3 x B=1 |    0.050 |  0.706 |      0.072 | 0.020 | 0.848 |     1178 |  211 |
| tiny teacher |    60 x B=3 |    0.276 |  0.075 |      0.015 | 0.018 | 0.383 |      957 |   30 |
| tiny student |     3 x B=1 |    0.011 |  0.087 |      0.016 | 0.017 | 0.132 |      957 |   30 |
| wan teacher  |    60 x B=3 |    0.167 |  0.533 |      0.048 | 0.018 | 0.766 |      998 |   69 |
| wan student  |     3 x B=1 |    0.008 |  0.553 |      0.054 | 0.017 | 0.633 |      998 |   69 |

(seconds per generated second of video, median of 3; 848 MiB resident before any row.) At the
demo size the 20-step teacher needs 2.8 s per second of video and the one-step student 0.85 s:
sampling gets 41x faster (2.06 -> 0.05 s), but the whole call only 3.3x, because the VAE
decoder (0.65-0.71 s per second of video, 0.8 M parameters decoding 17 frames of 64 x 64 per
segment) is then 83% of the student's time; after distillation the decoder, not the DiT, is
what to speed up. The Wan row's tiny transformer (0.05 M) makes its sampling cheap, so it
mostly measures the same decoder. ``--quick`` (4 measured teacher steps, extrapolated) gave the same
picture: demo teacher 3.3, student 1.0 s per second of video. The peak resident set is the
least repeatable column (glibc's allocator: the wan rows added 69 MiB in this run and 255-268
in the ``--quick`` one): read "+MiB" as an order of magnitude, a few hundred MiB at the demo
size, teacher and student alike.

| size | params (M) | s/step |   min-max | segments/s | peak MiB | +MiB |
|:-----|-----------:|-------:|----------:|-----------:|---------:|-----:|
| demo |      10.68 |   1.38 | 1.28-1.50 |        5.8 |     1425 |  326 |
| tiny |       0.63 |   0.11 | 0.08-0.13 |       71.0 |      977 |   34 |
| wan  |       0.36 |   0.26 | 0.08-0.31 |       31.3 |     1056 |  114 |

(training step, B=8, median of 5.) Paper sizes (meta device, millions of parameters): the DiT
at ``wan1.3b`` with the preset's conditions has 1956.1 (backbone 1955.6: 236.2 of it the
frame-aligned audio cross-attention at ``audio_dim`` 1024, 424.9 the per-block adaLN
modulation; audio projector + pose guider 0.58); the Wan2.1 adapter with the same conditions
1657.4 (the plain ``WanBackbone.wan_1_3b()`` is 1419.0, Wan2.1-T2V-1.3B; it adds the same
236.2 of audio attention and shares one time projection instead of per-block adaLN);
``VideoVAE.wan()`` 126.9; the frozen MiniLM caption encoder 22.7. So ``size: wan1.3b`` has
Wan2.1-1.3B's width, depth, heads and FFN but 0.54 B more parameters (adaLN-Zero in every
block, Peebles & Xie's DiT, and the audio branch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# this script's folder holds benchmark files named like packages: keep it off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import contextlib  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gesture_apps.runtime import to_dict  # noqa: E402
from gesture_apps.systems.omnihuman import pipeline as pipeline_module  # noqa: E402
from gesture_apps.systems.omnihuman.conditions import (  # noqa: E402
    audio_feature_dim,
    text_dim,
    text_encoder,
)
from gesture_apps.systems.omnihuman.config import (  # noqa: E402
    OmniHumanModelConfig,
    OmniHumanRecipeConfig,
    OmniHumanSampleConfig,
)
from gesture_apps.systems.omnihuman.data import VideoDataConfig  # noqa: E402
from gesture_apps.systems.omnihuman.model import (  # noqa: E402
    MOTION_FRAMES,
    DiTBackbone,
    OmniHumanConfig,
    OmniHumanModel,
)
from gesture_apps.systems.omnihuman.pipeline import OmniHumanPipeline, Request  # noqa: E402
from gesture_apps.systems.omnihuman.train import OmniHumanObjective, build_model  # noqa: E402
from gesture_apps.systems.omnihuman.vae import VideoVAE  # noqa: E402
from gesture_apps.systems.omnihuman.wan import WanBackbone  # noqa: E402
from gesture_data.video import KEYPOINT_NAMES  # noqa: E402

SEGMENTS = 3  # segments per generated video: the 2nd and 3rd carry motion frames
BATCH = 8  # training batch
SAMPLE = OmniHumanSampleConfig()  # 20 steps; audio guidance 2.5 -> 1, text 1.5 -> 1
STUDENT = dict(
    steps=1, audio_guidance=1.0, audio_guidance_end=1.0, text_guidance=1.0, text_guidance_end=1.0
)  # what distill.export_omnihuman_student writes into the student bundle's spec
PROMPT = "a person talks and moves their hands"

# name -> (backbone, DiT size, frame side, segment frames, VAE base_dim, model section extras)
SIZES = {
    "demo": dict(
        backbone="dit", size="small", side=64, segment=17, vae_base=16,
        model=dict(audio_dim=64, pose_channels=8, heatmap_size=32, patch_size=(1, 2, 2)),
    ),
    "tiny": dict(
        backbone="dit", size="tiny", side=32, segment=9, vae_base=8,
        model=dict(audio_dim=32, pose_channels=4, heatmap_size=16, patch_size=(1, 1, 1)),
    ),
    "wan": dict(
        backbone="wan", size="tiny", side=64, segment=17, vae_base=16,
        model=dict(audio_dim=64, pose_channels=8, heatmap_size=32),
    ),
}  # fmt: skip


# ----- memory ----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> float:
    """Give freed heap back to the OS, then reset the peak resident set (VmHWM) to the current
    one (Linux >= 4.0); returns that resident set in MiB. Without the trim, memory that an
    earlier row freed but glibc kept would count as this row's."""
    gc.collect()
    # not glibc: no trim, and a row may then carry an earlier row's freed heap
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mib()


def peak_mib() -> float:
    return _status_kib("VmHWM") / 1024


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


# ----- building ----------------------------------------------------------------------------------


def recipe(name: str) -> OmniHumanRecipeConfig:
    s = SIZES[name]
    model = OmniHumanModelConfig(backbone=s["backbone"], size=s["size"], **s["model"])
    data = VideoDataConfig(size=s["side"], segment_frames=s["segment"])
    return OmniHumanRecipeConfig(model=model, data=data)


def random_pipeline(name: str) -> OmniHumanPipeline:
    """A pipeline of random weights built as ``train.prepare`` builds it (``build_model``,
    the spec keys it writes), without data or a trained VAE."""
    cfg = recipe(name)
    torch.manual_seed(0)
    vae = VideoVAE.tiny(base_dim=SIZES[name]["vae_base"]).eval().requires_grad_(False)
    model = build_model(cfg, vae.latent_channels, len(KEYPOINT_NAMES)).eval()
    spec = {
        "fps": float(cfg.data.fps),
        "size": int(cfg.data.size),
        "segment_frames": int(cfg.data.segment_frames),
        "sample": to_dict(cfg.sample),
        "stages": [to_dict(s) for s in cfg.stages],
    }
    return OmniHumanPipeline(vae=vae, model=model, spec=spec)


def request(pipe: OmniHumanPipeline, seed: int = 0) -> Request:
    """A reference image and speech-like noise as long as ``SEGMENTS`` segments (mode audio:
    no keypoints)."""
    rng = np.random.default_rng(seed)
    T, s = SEGMENTS * pipe.segment_frames, pipe.size
    sr = 16000
    audio = (0.1 * rng.standard_normal(round(T / pipe.fps * sr))).astype(np.float32)
    return Request(
        reference=rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
        audio=audio,
        sample_rate=sr,
        prompt=PROMPT,
        frames=T,
    )


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----- table 1: generation ----------------------------------------------------------------------


class ClockedVAE:
    """The pipeline's VAE with its encode / decode calls timed: a 1-frame encode is the
    reference image, a longer one the motion frames."""

    def __init__(self, vae):
        self.vae, self.spent = vae, {"decode": 0.0, "motion": 0.0, "reference": 0.0}

    def __getattr__(self, name):
        return getattr(self.vae, name)

    def encode(self, video, **kw):
        t0 = time.perf_counter()
        out = self.vae.encode(video, **kw)
        self.spent["reference" if video.shape[2] == 1 else "motion"] += time.perf_counter() - t0
        return out

    def decode(self, latents):
        t0 = time.perf_counter()
        out = self.vae.decode(latents)
        self.spent["decode"] += time.perf_counter() - t0
        return out


def timed_generate(pipe: OmniHumanPipeline, req: Request, **kw) -> dict[str, float]:
    """One ``generate`` call; seconds per stage (``cond``: text, audio features and the
    reference encode; ``sampling``: the rest), and its peak resident set."""
    clocked, vae = ClockedVAE(pipe.vae), pipe.vae
    spent = {"text": 0.0, "audio": 0.0}
    encode_text, features = pipeline_module.encode_text, pipe._features

    def timed_text(*a, **k):
        t0 = time.perf_counter()
        out = encode_text(*a, **k)
        spent["text"] += time.perf_counter() - t0
        return out

    def timed_features(*a, **k):
        t0 = time.perf_counter()
        out = features(*a, **k)
        spent["audio"] += time.perf_counter() - t0
        return out

    batches: list[int] = []  # the batch of every model call (3 guidance levels: 3 B)
    hook = pipe.model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    pipe.vae, pipeline_module.encode_text, pipe._features = clocked, timed_text, timed_features
    try:
        base = reset_peak()
        t0 = time.perf_counter()
        pipe.generate([req], mode="audio", **kw)
        total = time.perf_counter() - t0
        peak = peak_mib()
    finally:
        hook.remove()
        pipe.vae, pipeline_module.encode_text = vae, encode_text
        del pipe._features  # back to the class's method
    cond = spent["text"] + spent["audio"] + clocked.spent["reference"]
    vae_time = clocked.spent["decode"] + clocked.spent["motion"]
    return {
        "cond": cond,
        "sampling": total - cond - vae_time,
        "decode": clocked.spent["decode"],
        "motion": clocked.spent["motion"],
        "total": total,
        "peak": peak,
        "added": peak - base,
        "calls": len(batches),
        "batch": max(batches),
    }


def generate_rows(name: str, repeats: int, teacher_steps: int) -> list[tuple]:
    """Teacher and student rows of one size: seconds per generated second of video. With
    ``teacher_steps`` < 20 the teacher's sampling time is extrapolated to 20 steps (every step
    runs the same shapes: one batched forward of the three guidance levels)."""
    pipe = random_pipeline(name)
    req = request(pipe)
    seconds = req.frames / pipe.fps
    with torch.no_grad():
        pipe.generate([req], mode="audio", steps=1)  # warm-up (loads MiniLM, allocates)
    rows = []
    for who, kw, scale in (
        ("teacher", dict(steps=teacher_steps), SAMPLE.steps / teacher_steps),
        ("student", STUDENT, 1.0),
    ):
        runs = [timed_generate(pipe, req, **kw) for _ in range(repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        sampling = med["sampling"] * scale
        total = med["cond"] + sampling + med["decode"] + med["motion"]
        calls = f"{runs[0]['calls']} x B={runs[0]['batch']}"
        rows.append((
            f"{name} {who}", calls,
            *(f"{v / seconds:.3f}" for v in (sampling, med["decode"], med["motion"], med["cond"])),
            f"{total / seconds:.3f}", f"{med['peak']:.0f}", f"{med['added']:.0f}",
        ))  # fmt: skip
    return rows


def describe(name: str) -> str:
    pipe = random_pipeline(name)
    m = pipe.model
    parts = {
        "backbone": m.backbone,
        "audio": m.audio,
        "pose guider": m.pose,
        "VAE": pipe.vae,
    }
    sizes = ", ".join(f"{k} {count(v) / 1e6:.2f} M" for k, v in parts.items())
    c = m.config
    L = pipe.segment_frames
    n = 1 + (L - 1) // 4
    return (
        f"{name}: {pipe.size}x{pipe.size}, {L}-frame segments -> {n} latent frames of "
        f"{c.latent_channels}x{c.latent_size}x{c.latent_size} (+1 reference, +2 motion); {sizes}"
    )


# ----- table 2: training -------------------------------------------------------------------------


def random_batch(model: OmniHumanModel, segment: int, g: torch.Generator) -> dict:
    """``BATCH`` training segments of random tensors with the shapes ``data.build_segments``
    gives (latents, motion frames, reference, audio features, keypoints, caption tokens)."""
    c = model.config
    n, h = 1 + (segment - 1) // 4, c.latent_size
    K, S = c.keypoints, c.text_tokens
    lat = (BATCH, c.latent_channels)
    return {
        "latents": torch.randn(*lat, n, h, h, generator=g),
        "motion": torch.randn(*lat, 2, h, h, generator=g),
        "has_motion": torch.rand(BATCH, generator=g) < 0.75,
        "reference": torch.randn(*lat, 1, h, h, generator=g),
        "audio": torch.randn(BATCH, segment, c.feat_dim, generator=g),
        "audio_motion": torch.randn(BATCH, MOTION_FRAMES, c.feat_dim, generator=g),
        "keypoints": 0.2 + 0.6 * torch.rand(BATCH, segment, K, 2, generator=g),
        "confidence": torch.ones(BATCH, segment, K),
        "text": torch.randn(BATCH, S, c.text_dim, generator=g),
        "text_mask": torch.ones(BATCH, S, dtype=torch.bool),
    }


def train_row(name: str, steps: int) -> tuple:
    cfg = recipe(name)
    pipe = random_pipeline(name)
    schedule = cfg.schedule()
    objective = OmniHumanObjective(pipe.model.train(), schedule, cfg.loss)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = random_batch(pipe.model, cfg.data.segment_frames, g)
    last = schedule.total_steps - 1  # stage 3: every condition drawn

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(batch, last - i)
        loss.backward()
        opt.step()

    step(0)  # warm-up: AdamW's state
    times, peaks, added = [], [], []
    for i in range(1, steps + 1):
        base = reset_peak()
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
        peaks.append(peak_mib())
        added.append(peaks[-1] - base)
    params = count(objective) / 1e6
    s = statistics.median(times)
    return (
        name, f"{params:.2f}", f"{s:.2f}", f"{min(times):.2f}-{max(times):.2f}",
        f"{BATCH / s:.1f}", f"{max(peaks):.0f}", f"{max(added):.0f}",
    )  # fmt: skip


# ----- table 3: parameters at paper size ---------------------------------------------------------


def paper_rows() -> list[tuple]:
    """Parameter counts of the paper-size models built on the meta device."""
    preset = OmniHumanModelConfig(size="wan1.3b", audio_dim=1024, pose_channels=16, heatmap_size=64)
    tdim = text_dim(preset.text_encoder)  # loads MiniLM now, outside the meta device
    cfg = OmniHumanRecipeConfig(model=preset, data=VideoDataConfig(size=64, fps=25.0))
    K = len(KEYPOINT_NAMES)
    rows = []
    with torch.device("meta"):
        dit = build_model(cfg, 16, K)  # Wan2.1's VAE: 16 latent channels
        oc = OmniHumanConfig(
            backbone="wan",
            latent_channels=16,
            feat_dim=audio_feature_dim(cfg.data.audio_features),
            audio_dim=preset.audio_dim,
            keypoints=K,
            latent_size=cfg.data.size // 8,
            heatmap_size=preset.heatmap_size,
            pose_channels=preset.pose_channels,
            text_dim=tdim,
        )
        wan = OmniHumanModel(
            WanBackbone.wan_1_3b(
                extra_channels=oc.extra_channels, audio_dim=oc.audio_dim, text_dim=tdim
            ),
            oc,
        )
        plain = WanBackbone.wan_1_3b()  # Wan2.1-T2V-1.3B itself, nothing added
        vae = VideoVAE.wan()

    def part(m: torch.nn.Module, *keys: str) -> str:
        n = sum(p.numel() for k, p in m.named_parameters() if any(s in k for s in keys))
        return f"{n / 1e6:.1f}"

    for label, m in (("DiT wan1.3b + conditions", dit), ("Wan2.1 adapter + conditions", wan)):
        rows.append((
            label, f"{count(m.backbone) / 1e6:.1f}",
            part(m.backbone, "frame_cross", "conditions.audio"),
            part(m.backbone, ".norm1.linear"),
            f"{(count(m.audio) + count(m.pose)) / 1e6:.2f}", f"{count(m) / 1e6:.1f}",
        ))  # fmt: skip
    rows.append(("WanBackbone.wan_1_3b() (plain)", f"{count(plain) / 1e6:.1f}", "", "", "", ""))
    rows.append(("VideoVAE.wan()", "", "", "", "", f"{count(vae) / 1e6:.1f}"))
    minilm = count(text_encoder(preset.text_encoder).model)
    rows.append(("MiniLM text encoder (frozen)", "", "", "", "", f"{minilm / 1e6:.1f}"))
    assert isinstance(dit.backbone, DiTBackbone)
    return rows


# ----- printing ----------------------------------------------------------------------------------


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
    p.add_argument("--tables", default="generate,train,params", help="generate, train, params")
    p.add_argument("--sizes", default="demo,tiny,wan", help="demo, tiny and/or wan")
    p.add_argument("--repeats", type=int, default=3, help="generation: median of R calls")
    p.add_argument(
        "--teacher-steps",
        type=int,
        default=SAMPLE.steps,
        help="teacher steps measured (fewer: the 20-step sampling time is extrapolated)",
    )
    p.add_argument("--train-steps", type=int, default=5, help="training: median of N steps")
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 generation per row with 4 measured teacher steps, 2 training steps",
    )
    args = p.parse_args()
    if args.quick:
        args.repeats, args.teacher_steps, args.train_steps = 1, 4, 2
    tables = {t.strip() for t in args.tables.split(",")}
    sizes = [s.strip() for s in args.sizes.split(",")]
    if tables - {"generate", "train", "params"}:
        p.error(f"--tables: unknown {sorted(tables - {'generate', 'train', 'params'})}")
    if set(sizes) - set(SIZES):
        p.error(f"--sizes: unknown {sorted(set(sizes) - set(SIZES))}; expected {list(SIZES)}")
    if not 1 <= args.teacher_steps <= SAMPLE.steps:
        p.error(f"--teacher-steps: expected 1 to {SAMPLE.steps}")
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"threads={args.threads}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load} (1/5/15 min) at start: the machine is shared, times are upper "
        "bounds"
    )
    text_dim("minilm")  # the frozen caption encoder, resident before any memory reading
    print(f"resident set after loading torch, diffusers and MiniLM: {rss_mib():.0f} MiB")
    for name in sizes:
        print(f"- {describe(name)}")
    if "generate" in tables:
        rows = [r for name in sizes for r in generate_rows(name, args.repeats, args.teacher_steps)]
        extra = (
            ""
            if args.teacher_steps == SAMPLE.steps
            else f"; teacher sampling extrapolated from {args.teacher_steps} measured steps"
        )
        print_table(
            f"OmniHuman generation, mode audio, one request of {SEGMENTS} segments, random "
            f"weights; seconds per generated second of video (median of {args.repeats}"
            f"{extra}); peak resident set while generating",
            ("size / model", "model calls", "sampling", "decode", "motion enc", "cond",
             "total", "peak MiB", "+MiB"),
            rows,
        )  # fmt: skip
    if "train" in tables:
        print_table(
            f"OmniHuman training step (OmniHumanObjective forward + backward + AdamW), B={BATCH} "
            f"random segments, last stage; median of {args.train_steps} after one warm-up step",
            ("size", "params (M)", "s/step", "min-max", "segments/s", "peak MiB", "+MiB"),
            [train_row(name, args.train_steps) for name in sizes],
        )
    if "params" in tables:
        print_table(
            "Paper-size parameter counts (meta device; millions): the backbone with its audio "
            "cross-attention and per-block adaLN modulation, the audio projector + pose guider",
            ("model", "backbone", "audio x-attn", "block adaLN", "audio + pose", "total"),
            paper_rows(),
        )
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
