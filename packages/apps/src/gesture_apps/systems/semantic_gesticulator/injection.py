"""Semantic gesture injection into generated RVQ codes, as Semantic Gesticulator does it
(``SG_pipeline/pipeline.py::insert_sg_2part`` and the blending in
``generate_semantic_gestures.py::generate``).

1. **Window.** A gesture of ``M`` tokens ends a quarter of its length after the word:
   ``start = max(not_before, end_of_word - round(0.75 M))`` (SG also never starts before the
   sentence, and leaves 4 tokens after the previous insertion: the caller's ``not_before``);
   the window is cut at the end of the sequence.
2. **Replace.** The gesture's codes (all four residual levels, SG's ``rq`` mode) replace the
   generated ones in the window; with ``fines`` and ``cond`` the fine GPTs then regenerate
   levels 1..3 there from the gesture's level 0 (so the residuals fit the audio; the issue asks
   for it, SG keeps the clip's residuals).
3. **Blend.** ``blend`` tokens each side of the window move towards the window's first / last
   code in the bottleneck latent space (sum of the residual code vectors), with SG's weights on
   the generated code ``[0.7, 0.5, 0.3 | 0.3, 0.5, 0.7]``, and are re-quantised.
4. The caller decodes with SG's gaussian filter at the windows
   (``tokenizer.decode(..., filter="gaussian", insert_windows=windows)``).

Codes are ``{"body", "hands"}`` LongTensors ``(1, N, 4)``. Pure functions: inputs are not
modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GAP = 4  # SG: a new insertion starts at least 4 tokens after the previous one ended


def insert_window(at: int, length: int, n: int, *, not_before: int = 0) -> tuple[int, int]:
    """Token window ``(start, end)`` of a ``length``-token gesture for a word ending at token
    ``at`` in a sequence of ``n`` tokens; empty (``start == end``) when it would start at or
    after the end."""
    if length < 1:
        raise ValueError(f"gesture length must be at least 1 token, found {length}")
    start = max(0, not_before, at - round(0.75 * length))
    if start >= n:
        return n, n
    return start, min(n, start + length)


def blend_weights(blend: int) -> Tensor:
    """Weight of the generated code at distance 1..``blend`` from the window: SG's 0.3, 0.5,
    0.7 for ``blend=3`` (nearest first), evenly spaced from 0.3 to 0.7 otherwise."""
    if blend < 1:
        return torch.zeros(0)
    if blend == 1:
        return torch.tensor([0.5])
    return torch.linspace(0.3, 0.7, blend)


def inject(
    tokenizer,
    codes: dict[str, Tensor],
    gesture_codes: dict[str, Tensor],
    at: int,
    *,
    blend: int = 3,
    not_before: int = 0,
    fines: Sequence | None = None,
    cond: Tensor | None = None,
    window: int = 15,
) -> tuple[dict[str, Tensor], tuple[int, int]]:
    """Insert one gesture; returns the new codes and the token window it occupies.

    Args:
        tokenizer: an ``SGRVQVAE`` (``codes_to_latent`` / ``latent_to_codes`` per part).
        codes: generated codes ``{part: (1, N, 4)}``.
        gesture_codes: the retrieved gesture's codes ``{part: (1, M, 4)}``.
        at: the token index where the word ends (SG's ``end_code``).
        blend: tokens blended on each side of the window.
        not_before: first token the window may start at (sentence start, previous gesture
            end + :data:`GAP`).
        fines, cond: the fine GPTs and the audio features ``(1, N, 437)``; when given, levels
            1..3 in the window are regenerated (``sg_regenerate_fine``, with the fine GPTs'
            ``window``, their block size).
    """
    _check(codes, "codes")
    _check(gesture_codes, "gesture_codes")
    n, m = codes["body"].shape[1], gesture_codes["body"].shape[1]
    start, end = insert_window(at, m, n, not_before=not_before)
    out = {k: v.clone() for k, v in codes.items()}
    if start == end:
        return out, (start, end)
    for part in out:
        out[part][:, start:end] = gesture_codes[part][:, : end - start].to(out[part])
    if fines is not None and cond is not None:
        from motion_tokenizers.priors import sg_regenerate_fine

        out = sg_regenerate_fine(list(fines), out, cond, positions=slice(start, end), window=window)
        out = {k: v.clone() for k, v in out.items()}
    _blend(tokenizer, codes, out, start, end, blend)
    return out, (start, end)


def inject_all(
    tokenizer,
    codes: dict[str, Tensor],
    gestures: Sequence[tuple[dict[str, Tensor], int]],
    *,
    blend: int = 3,
    not_before: Sequence[int] | None = None,
    fines: Sequence | None = None,
    cond: Tensor | None = None,
    window: int = 15,
) -> tuple[dict[str, Tensor], list[tuple[int, int] | None]]:
    """Insert ``gestures`` (``(gesture codes, word end token)``, in time order) one after the
    other, each at least :data:`GAP` tokens after the previous one (SG's rule for words close
    together); a gesture that no longer fits before the end is skipped (its window ``None``).
    No gesture: the codes come back unchanged."""
    out = {k: v.clone() for k, v in codes.items()}
    windows: list[tuple[int, int] | None] = []
    last = None
    for i, (g, at) in enumerate(gestures):
        floor = not_before[i] if not_before is not None else 0
        if last is not None:
            floor = max(floor, last + GAP)
        out, (s, e) = inject(
            tokenizer,
            out,
            g,
            at,
            blend=blend,
            not_before=floor,
            fines=fines,
            cond=cond,
            window=window,
        )
        if s == e:
            windows.append(None)
            continue
        windows.append((s, e))
        last = e
    return out, windows


@torch.no_grad()
def _blend(tokenizer, before: dict, out: dict, start: int, end: int, blend: int) -> None:
    """SG's edge blending, in place on ``out``: generated code latent x w + the window's edge
    code latent x (1 - w), re-quantised."""
    n = out["body"].shape[1]
    w = blend_weights(blend)
    pos, weight, edge = [], [], []
    for d in range(1, blend + 1):
        if start - d >= 0:
            pos.append(start - d), weight.append(w[d - 1]), edge.append(start)
        if end - 1 + d < n:
            pos.append(end - 1 + d), weight.append(w[d - 1]), edge.append(end - 1)
    if not pos:
        return
    for part in out:
        dev = next(tokenizer.parameters()).device
        raw = tokenizer.codes_to_latent(part, before[part][0, pos].to(dev))  # (P, D)
        target = tokenizer.codes_to_latent(part, out[part][0, edge].to(dev))  # (P, D)
        wt = torch.stack(weight).to(raw)[:, None]
        mixed = wt * raw + (1 - wt) * target
        out[part][0, pos] = tokenizer.latent_to_codes(part, mixed).to(out[part])


def _check(codes: dict[str, Tensor], name: str) -> None:
    if set(codes) != {"body", "hands"}:
        raise ValueError(f"{name}: expected parts body and hands, found {sorted(codes)}")
    shapes = {k: tuple(v.shape) for k, v in codes.items()}
    b = shapes["body"]
    if len(b) != 3 or b[0] != 1 or b[1] < 1 or shapes["hands"] != b:
        raise ValueError(f"{name}: expected (1, N, Q) codes per part, found {shapes}")
