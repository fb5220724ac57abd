"""Exponential moving average of a model's weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after every optimizer step.

    Floating-point parameters are averaged; buffers (e.g. step counters) are copied, since
    averaging them would mix states that never co-existed. ``average_buffers=True`` averages
    floating-point buffers too, for models whose buffers must stay paired with the weights (a
    tokenizer's codebooks are fitted to its encoder's output: averaged convolutions need
    codebooks averaged over the same steps). Integer buffers are always copied. The shadow
    lives on the model's device in float32.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, average_buffers: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), found {decay}")
        self.decay = decay
        self.average_buffers = average_buffers
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()
        }
        self._params = {name for name, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        avg_s, avg_p = [], []
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point() and (self.average_buffers or k in self._params):
                avg_s.append(s)
                avg_p.append(v.detach().float())
            else:
                s.copy_(v.detach())
        if avg_s:
            torch._foreach_lerp_(avg_s, avg_p, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. a copy used for export)."""
        model.load_state_dict(
            {k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()}
        )

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:3]}")
        self.decay = float(state["decay"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
