"""Training curves of finished runs, drawn from the trainers' logged history."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_curves(history: dict[str, list[dict]], path: Path) -> Path:
    """Loss over steps, one panel per run (``{run name: trainer history rows}``), as a png
    written under a temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2))
    for ax, (name, rows) in zip(np.atleast_1d(axes), history.items(), strict=True):
        pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log" if pts and min(p[1] for p in pts) > 0 else "linear")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
