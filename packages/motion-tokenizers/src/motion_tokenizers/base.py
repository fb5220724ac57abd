"""Shared machinery of the convolutional motion tokenizers (VQ-VAE, RVQ-VAE, FSQ/LFQ variants).

A tokenizer is ``Conv1dEncoder -> Quantizer -> Conv1dDecoder``; the concrete classes in
``rvqvae.py`` and ``vqvae.py`` only fix the constructor (which is the saved config) and presets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ._strict import HUB_ARGS, build, check_config, load_weights
from .encdec import Conv1dDecoder, Conv1dEncoder
from .errors import CheckpointError, TokenizerInputError
from .io import atomic_directory
from .quantizers import Quantizer, QuantizerOutput, eval_mode


@dataclass(frozen=True)
class TokenizerOutput:
    """recon ``(B, T, C)``; indices ``(B, T', Q)`` (-1 = dropped layer); commit_loss and
    perplexity are scalars."""

    recon: Tensor
    indices: Tensor
    commit_loss: Tensor
    perplexity: Tensor


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int]:
    """Pad ``(B, T, C)`` at the end by repeating the last frame up to a multiple of ``multiple``.

    Returns the padded tensor and the original length, to crop the reconstruction back:
    ``recon[:, :T]``.
    """
    T = x.shape[1]
    extra = (-T) % multiple
    if extra:
        x = torch.cat([x, x[:, -1:].expand(-1, extra, -1)], dim=1)
    return x, T


class LocalPretrained:
    """``save_pretrained`` / ``from_pretrained`` for the package's hub models: the folder is
    written atomically, read from local paths only, with strict keys and errors that name the
    file at fault. Listed before ``nn.Module`` (and ``PyTorchModelHubMixin``) in the bases."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write ``config.json`` + ``model.safetensors`` (the folder swapped in atomically)."""
        atomic_directory(
            save_directory, lambda tmp: PyTorchModelHubMixin.save_pretrained(self, tmp, **kwargs)
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Rebuild from a local folder written by :meth:`save_pretrained` (strict key matching).

        Only local folders: nothing is downloaded at run time.
        """
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder not found")
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: file not found")
        check_config(path / "config.json", cls)
        kwargs.setdefault("strict", True)
        kwargs["local_files_only"] = True  # a second guard: the Hub client must not dial out
        try:
            return PyTorchModelHubMixin.from_pretrained.__func__(cls, path, **kwargs)
        except CheckpointError:
            raise
        except Exception as e:  # the mixin decoding config values into constructor types
            raise CheckpointError(f"{path / 'config.json'}: cannot decode ({e})") from e

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location="cpu", strict=True, **kwargs):
        # called by the mixin with the config as keyword arguments; replaces its lenient
        # loader (and its print) with one that names the file and key at fault
        folder = Path(model_id)
        model = build(cls, folder, {k: v for k, v in kwargs.items() if k not in HUB_ARGS})
        load_weights(model, folder / "model.safetensors", map_location, strict)
        return model.eval()


class MotionTokenizer(LocalPretrained, nn.Module):
    """Base class: encoder, quantizer, decoder and the public encode/decode API."""

    input_dim: int

    def _build(
        self,
        *,
        input_dim: int,
        code_dim: int,
        down_t: int,
        stride_t: int,
        width: int,
        depth: int,
        dilation_growth_rate: int,
        activation: str,
        norm: str | None,
        dropout: float,
        polyphase_upsample: bool,
        quantizer: Quantizer,
    ) -> None:
        if input_dim < 1 or code_dim < 1:
            raise ValueError(
                f"input_dim and code_dim must be positive, found {input_dim}, {code_dim}"
            )
        self.input_dim, self.code_dim = input_dim, code_dim
        self.down_t, self.stride_t = down_t, stride_t
        conv = dict(
            down_t=down_t,
            stride_t=stride_t,
            width=width,
            depth=depth,
            dilation_growth_rate=dilation_growth_rate,
            activation=activation,
            norm=norm,
            dropout=dropout,
        )
        self.encoder = Conv1dEncoder(input_dim, code_dim, **conv)
        self.quantizer = quantizer
        self.decoder = Conv1dDecoder(
            input_dim, code_dim, polyphase_upsample=polyphase_upsample, **conv
        )

    # ----- properties ------------------------------------------------------------------

    @property
    def downsample_factor(self) -> int:
        return self.stride_t**self.down_t

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def num_quantizers(self) -> int:
        return self.quantizer.num_quantizers

    @property
    def latent_dim(self) -> int:
        return self.code_dim

    # ----- validation ------------------------------------------------------------------

    def check_motion(self, x: Tensor, name: str = "x") -> None:
        """Raise :class:`TokenizerInputError` unless ``x`` is a finite ``(B, T, input_dim)``
        tensor whose length is a positive multiple of :attr:`downsample_factor`."""
        f = self.downsample_factor
        if not isinstance(x, Tensor):
            raise TokenizerInputError(f"{name}: expected a torch.Tensor, found {type(x).__name__}")
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise TokenizerInputError(
                f"{name}: expected shape (B, T, {self.input_dim}), found {tuple(x.shape)}"
            )
        T = x.shape[1]
        if f > T:
            raise TokenizerInputError(f"{name}: sequence of {T} frames is shorter than {f} frames")
        if T % f:
            raise TokenizerInputError(
                f"{name}: length {T} is not divisible by {f} (= stride_t**down_t); crop it or use "
                "motion_tokenizers.pad_to_multiple and crop the output back"
            )
        if not x.dtype.is_floating_point:
            raise TokenizerInputError(f"{name}: expected a float tensor, found {x.dtype}")
        if not torch.isfinite(x).all():
            raise TokenizerInputError(f"{name}: contains NaN or inf values")

    def _check_latent(self, z: Tensor) -> None:
        if z.ndim != 3 or z.shape[-1] != self.code_dim:
            raise TokenizerInputError(
                f"latent: expected shape (B, N, {self.code_dim}), found {tuple(z.shape)}"
            )
        if not torch.isfinite(z).all():
            raise TokenizerInputError("latent: contains NaN or inf values")

    # ----- API -------------------------------------------------------------------------

    def forward(self, x: Tensor) -> TokenizerOutput:
        """x ``(B, T, C)`` -> :class:`TokenizerOutput` (training and evaluation path)."""
        self.check_motion(x)
        q = self.quantizer(self.encoder(x))
        return TokenizerOutput(self.decoder(q.quantized), q.indices, q.loss, q.perplexity)

    def encode_continuous(self, x: Tensor) -> Tensor:
        """Pre-quantisation latent ``(B, T / factor, code_dim)`` (GestureLSM's ``map2latent``)."""
        self.check_motion(x)
        return self.encoder(x)

    def quantize(self, z: Tensor) -> QuantizerOutput:
        """Quantise a latent ``(B, N, code_dim)`` in eval mode (no codebook update)."""
        self._check_latent(z)
        with eval_mode(self.quantizer):
            return self.quantizer(z)

    def encode(self, x: Tensor) -> Tensor:
        """x ``(B, T, C)`` -> code indices ``(B, T / factor, Q)`` (nearest codes, no dropout)."""
        return self.quantize(self.encode_continuous(x)).indices

    def _run_decoder(self, zq: Tensor, frames: tuple[int, int] | None) -> Tensor:
        """The decoder on ``zq``; with ``frames=(lo, hi)`` only those output frames, computed
        from the positions they depend on (:meth:`Conv1dDecoder.forward_range`: a stream
        decodes a few new frames inside their context)."""
        if frames is None:
            return self.decoder(zq)
        return self.decoder.forward_range(zq, *frames)

    def decode(self, zq: Tensor, *, frames: tuple[int, int] | None = None) -> Tensor:
        """Decode an already quantised latent ``(B, N, code_dim)`` -> ``(B, N * factor, C)``
        (frames ``[lo, hi)`` only with ``frames``)."""
        self._check_latent(zq)
        return self._run_decoder(zq, frames)

    def decode_indices(
        self,
        indices: Tensor,
        num_layers: int | None = None,
        *,
        reference: bool = False,
        frames: tuple[int, int] | None = None,
    ) -> Tensor:
        """indices ``(B, N, Q')`` -> motion ``(B, N * factor, C)``; only the first
        ``num_layers`` residual layers when given (coarse decoding). ``reference`` matters only
        for GestureLSM checkpoints (see :meth:`RVQVAE.decode_indices`); ``frames`` as in
        :meth:`decode`."""
        return self._run_decoder(self.quantizer.indices_to_latent(indices, num_layers), frames)

    def decode_latent(
        self, z: Tensor, num_layers: int | None = None, *, frames: tuple[int, int] | None = None
    ) -> Tensor:
        """Re-quantise a continuous latent, then decode (GestureLSM's ``latent2origin``).

        Goes through the indices so that it equals ``decode_indices(quantize(z).indices)``;
        ``frames`` as in :meth:`decode`.
        """
        self._check_latent(z)
        return self.decode_indices(self.quantizer.nearest_indices(z), num_layers, frames=frames)
