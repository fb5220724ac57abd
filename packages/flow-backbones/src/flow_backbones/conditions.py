"""Omni-conditions training: staged keep ratios per condition.

OmniHuman (Lin et al. 2025, "OmniHuman-1: Rethinking the Scaling-Up of One-Stage Conditioned
Human Animation Models", arXiv:2502.01061) trains one model on several conditions at once
(text, reference image, audio, pose) in stages: each stage adds a condition, and a condition
that determines the motion more strongly is kept less often (pose 0.13 < audio 0.25 < text 1),
so the model does not lean on it alone and the data that carries only the weaker conditions
still trains the model.

A :class:`ConditionSchedule` answers, for an optimizer step, which stage is active and which
rows of a batch keep each condition (``True``) or get its null input (``False``, which is also
what classifier-free guidance needs at sampling time). A dropped condition never drops the
sample: the row still trains with the conditions it keeps. Rows that lack a condition in the
data can be passed as ``available=`` and are then never marked as kept.

Masks are a pure function of ``(seed, step, batch_size)``: each call builds its own
``torch.Generator`` from them and never touches the global RNG, so a run resumed at step
``s`` draws exactly the masks the uninterrupted run would have drawn, with no state to save.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .errors import FlowInputError

_M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser: a bijection of [0, 2**32) that scatters nearby ints."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _generator_seed(seed: int, step: int) -> int:
    # torch's CPU generator (mt19937) keeps only the low 32 bits of its seed, so mix down to
    # 32 bits ourselves; for a fixed seed, step -> seed is a bijection on [0, 2**32), so two
    # steps of one run never share their masks
    seed &= 0xFFFFFFFFFFFFFFFF  # two's complement: negative seeds are fine too
    base = _fmix32(seed ^ _fmix32(seed >> 32))
    return _fmix32(base + step)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclass(frozen=True, kw_only=True)
class ConditionStage:
    """One training stage: how many optimizer steps it lasts and each condition's keep ratio.

    Args:
        name: stage name (unique within a schedule).
        steps: optimizer steps in this stage (>= 1).
        keep: condition name -> probability in [0, 1] that a row keeps that condition.
    """

    name: str
    steps: int
    keep: Mapping[str, float]

    def __post_init__(self) -> None:
        where = f"stage {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise FlowInputError(f"stage name: expected a non-empty string, found {self.name!r}")
        if not _is_int(self.steps) or self.steps < 1:
            raise FlowInputError(
                f"{where}: field 'steps': expected an int >= 1, found {self.steps!r}"
            )
        if not isinstance(self.keep, Mapping) or not self.keep:
            raise FlowInputError(
                f"{where}: field 'keep': expected a non-empty mapping condition -> ratio, "
                f"found {self.keep!r}"
            )
        keep = {}
        for cond, ratio in self.keep.items():
            if not isinstance(cond, str) or not cond:
                raise FlowInputError(
                    f"{where}: field 'keep': condition names must be non-empty strings, "
                    f"found {cond!r}"
                )
            ok = isinstance(ratio, numbers.Real) and not isinstance(ratio, bool)
            if not ok or not math.isfinite(ratio) or not 0.0 <= ratio <= 1.0:
                raise FlowInputError(
                    f"{where}: field 'keep[{cond!r}]': expected a ratio in [0, 1], found {ratio!r}"
                )
            keep[cond] = float(ratio)
        object.__setattr__(self, "steps", int(self.steps))
        # a copy (a plain dict, so the stage still pickles and deep-copies): the frozen stage
        # must not change when the caller later edits the mapping it passed
        object.__setattr__(self, "keep", keep)

    def to_dict(self) -> dict:
        """``{"name", "steps", "keep"}``, JSON-serialisable."""
        return {"name": self.name, "steps": self.steps, "keep": dict(self.keep)}


class ConditionSchedule:
    """Stages of per-condition keep ratios, and the keep masks they draw.

    Every stage names the same conditions: a condition a stage does not use is written with
    ratio 0, so a missing name is a typo to report, not a silent "never kept".

    Args:
        stages: the stages in training order (steps add up to :attr:`total_steps`).
        per: ``"sample"`` draws every row independently (classifier-free guidance training);
            ``"batch"`` keeps or drops a condition for the whole batch (the OmniHuman seed's
            ``rand < ratio`` rule).
        seed: the masks are a pure function of ``(seed, step, batch_size)``.

    Example::

        s = ConditionSchedule.omnihuman()
        index, stage = s.stage_at(60_000)   # (1, stage2)
        keep = s.sample(60_000, 8)          # {"text": (8,) bool, "reference": ..., ...}
    """

    def __init__(
        self,
        stages: Sequence[ConditionStage],
        *,
        per: Literal["sample", "batch"] = "sample",
        seed: int = 0,
    ) -> None:
        if isinstance(stages, ConditionStage | str | Mapping) or not isinstance(stages, Sequence):
            raise FlowInputError(
                f"stages: expected a sequence of ConditionStage, found {type(stages).__name__}"
            )
        if not stages:
            raise FlowInputError("stages: expected at least one ConditionStage, found none")
        for i, s in enumerate(stages):
            if not isinstance(s, ConditionStage):
                raise FlowInputError(
                    f"stages[{i}]: expected a ConditionStage, found {type(s).__name__}"
                )
        names = [s.name for s in stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise FlowInputError(f"stages: stage names must be unique, found {dup} twice")
        first = stages[0]
        for s in stages[1:]:
            if set(s.keep) != set(first.keep):
                raise FlowInputError(
                    f"stage {s.name!r}: field 'keep': expected the conditions of stage "
                    f"{first.name!r} {sorted(first.keep)}, found {sorted(s.keep)} (missing "
                    f"{sorted(set(first.keep) - set(s.keep))}, extra "
                    f"{sorted(set(s.keep) - set(first.keep))}; write 0 for an unused condition)"
                )
        if per not in ("sample", "batch"):
            raise FlowInputError(f"per: expected 'sample' or 'batch', found {per!r}")
        if not _is_int(seed):
            raise FlowInputError(f"seed: expected an int, found {seed!r}")
        self.stages: tuple[ConditionStage, ...] = tuple(stages)
        # sorted, so the draw order (and hence every mask) does not depend on dict order
        self.conditions: tuple[str, ...] = tuple(sorted(first.keep))
        self.per, self.seed = per, int(seed)
        self._ends = tuple(
            sum(s.steps for s in self.stages[: i + 1]) for i in range(len(self.stages))
        )
        self.total_steps: int = self._ends[-1]

    def __repr__(self) -> str:
        return f"ConditionSchedule({list(self.stages)!r}, per={self.per!r}, seed={self.seed})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConditionSchedule):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable-looking container semantics: compare, do not hash

    @classmethod
    def omnihuman(cls, steps: Sequence[int] = (50_000, 30_000, 20_000), **kw) -> ConditionSchedule:
        """The OmniHuman seed's three stages (``kw``: ``per``, ``seed``).

        ========  ====  =========  =====  ====
        stage     text  reference  audio  pose
        ========  ====  =========  =====  ====
        stage1    1.0   1.0        0      0
        stage2    1.0   1.0        0.5    0
        stage3    1.0   1.0        0.25   0.13
        ========  ====  =========  =====  ====
        """
        steps = tuple(steps)
        if len(steps) != 3:
            raise FlowInputError(f"steps: expected 3 stage lengths, found {len(steps)}: {steps}")
        table = [(0.0, 0.0), (0.5, 0.0), (0.25, 0.13)]
        stages = [
            ConditionStage(
                name=f"stage{i + 1}",
                steps=n,
                keep={"text": 1.0, "reference": 1.0, "audio": audio, "pose": pose},
            )
            for i, (n, (audio, pose)) in enumerate(zip(steps, table, strict=True))
        ]
        return cls(stages, **kw)

    def stage_start(self, index: int) -> int:
        """First optimizer step of stage ``index``."""
        return 0 if index == 0 else self._ends[index - 1]

    def stage_at(self, step: int) -> tuple[int, ConditionStage]:
        """``(index, stage)`` active at optimizer step ``step`` (>= 0); past the end, the last."""
        step = self._check_step(step)
        for i, end in enumerate(self._ends):
            if step < end:
                return i, self.stages[i]
        return len(self.stages) - 1, self.stages[-1]

    def sample(
        self,
        step: int,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        available: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Keep masks of one batch at optimizer step ``step``.

        Args:
            step: optimizer step (>= 0); selects the stage and seeds the draw.
            batch_size: rows ``B``.
            device: device of the returned masks (drawn on the CPU, so the same on any device).
            available: optional ``{condition: (B,) bool}``; a row whose data lacks a condition
                is never kept for it (it still trains on the others). It does not change the
                random draw, so the other conditions' masks stay the same.

        Returns:
            ``{condition: (B,) bool}`` for every name in :attr:`conditions`; True = keep.
        """
        if not _is_int(batch_size) or batch_size < 1:
            raise FlowInputError(f"batch_size: expected an int >= 1, found {batch_size!r}")
        batch_size = int(batch_size)
        step = self._check_step(step)
        _, stage = self.stage_at(step)
        ratio = torch.tensor([stage.keep[c] for c in self.conditions], dtype=torch.float64)
        g = torch.Generator(device="cpu").manual_seed(_generator_seed(self.seed, step))
        # every condition is drawn even when its ratio is 0 or 1, so a stage change does not
        # shift the random stream of the others; rand is in [0, 1): ratio 1 always keeps,
        # ratio 0 never does
        rows = 1 if self.per == "batch" else batch_size
        u = torch.rand(rows, len(self.conditions), generator=g, dtype=torch.float64)
        keep = (u < ratio).expand(batch_size, -1)
        out = {c: keep[:, i].to(device).contiguous() for i, c in enumerate(self.conditions)}
        for name, have in (available or {}).items():
            if name not in out:
                raise FlowInputError(
                    f"available: unknown condition {name!r}; expected one of {self.conditions}"
                )
            if (
                not isinstance(have, Tensor)
                or have.shape != (batch_size,)
                or have.dtype != torch.bool
            ):
                found = f"{tuple(have.shape)} {have.dtype}" if isinstance(have, Tensor) else have
                raise FlowInputError(
                    f"available[{name!r}]: expected a bool tensor of shape ({batch_size},), "
                    f"found {found}"
                )
            out[name] = out[name] & have.to(out[name].device)
        return out

    def to_dict(self) -> dict:
        """``{"per", "seed", "stages": [{"name", "steps", "keep"}, ...]}``, JSON-serialisable."""
        return {"per": self.per, "seed": self.seed, "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditionSchedule:
        """Rebuild from :meth:`to_dict`'s output (e.g. read back from JSON)."""
        if not isinstance(d, Mapping):
            raise FlowInputError(
                f"condition schedule: expected a mapping, found {type(d).__name__}"
            )
        unknown = sorted(set(d) - {"per", "seed", "stages"})
        if unknown:
            raise FlowInputError(
                f"condition schedule: unknown key(s) {unknown}; expected per, seed, stages"
            )
        if "stages" not in d:
            raise FlowInputError("condition schedule: missing field 'stages'")
        raw = d["stages"]
        if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
            raise FlowInputError(
                f"condition schedule: field 'stages': expected a list, found {type(raw).__name__}"
            )
        stages = []
        for i, s in enumerate(raw):
            if not isinstance(s, Mapping):
                raise FlowInputError(
                    f"condition schedule: stages[{i}]: expected a mapping, found {type(s).__name__}"
                )
            missing = [k for k in ("name", "steps", "keep") if k not in s]
            extra = sorted(set(s) - {"name", "steps", "keep"})
            if missing or extra:
                raise FlowInputError(
                    f"condition schedule: stages[{i}] ({s.get('name', '?')!r}): expected fields "
                    f"name, steps, keep; missing {missing}, unknown {extra}"
                )
            stages.append(ConditionStage(name=s["name"], steps=s["steps"], keep=s["keep"]))
        kw = {k: d[k] for k in ("per", "seed") if k in d}
        return cls(stages, **kw)

    @staticmethod
    def _check_step(step: int) -> int:
        if not _is_int(step) or step < 0:
            raise FlowInputError(f"step: expected an int >= 0, found {step!r}")
        return int(step)
