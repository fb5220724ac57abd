"""Text/motion matching evaluators and metrics of HumanML3D.

Guo et al., "Generating Diverse and Natural 3D Human Motions from Text", CVPR 2022.
The evaluator (``text_mot_match``) embeds a caption and a motion into one 512-d space:

- text: word vectors + a linear map of 15-way part-of-speech one-hots -> Linear -> bi-GRU over
  the caption's words -> (LayerNorm MLP) -> 512;
- motion: features without the 4 foot contacts -> two conv1d (kernel 4, stride 2) "movement"
  layers (4x shorter) -> Linear -> bi-GRU over ``m_lens // unit_length`` steps -> MLP -> 512.

Matched pairs lie close (Euclidean), so generated motion is scored by R-precision (does its
caption rank in the top k of 32?), matching score (MM-Dist: mean distance to its own caption),
FID of the motion embeddings against ground truth, diversity (mean distance of random pairs)
and multimodality (mean distance between repeated generations of one caption). The metric code
reproduces T2M-GPT's ``utils/eval_trans.py`` (the protocol every HumanML3D paper reports), and
the submodules keep the official ``finest.tar`` parameter names so the released weights load
unchanged (:meth:`T2MEvaluator.from_reference_checkpoint`).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from scipy import linalg
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gesture_eval._checks import check_finite, load_torch_file, to_numpy
from gesture_eval.errors import EvalError
from gesture_eval.fgd import CVPR24_FAILURE_VALUE, frechet_distance_from_stats

logger = logging.getLogger(__name__)

__all__ = [
    "POS_CATEGORIES",
    "ContrastiveOutput",
    "T2MEvaluator",
    "T2MMetrics",
    "WordVectorizer",
    "contrastive_loss",
    "diversity",
    "euclidean_distance_matrix",
    "frechet_distance",
    "matching_score",
    "multimodality",
    "r_precision",
    "t2m_metrics",
]

#: Guo's 15 part-of-speech categories, in the one-hot order of the released evaluators: the
#: 9 spaCy coarse tags they kept, then 5 "very important" motion word lists, then the rest.
POS_CATEGORIES: tuple[str, ...] = (
    "VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
    "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER",
)  # fmt: skip

# The VIP word lists override the spaCy tag of these (English) words; the HumanML3D evaluators
# were trained with them, so English captions must be tagged the same way to be scored fairly.
_VIP_WORDS: dict[str, frozenset[str]] = {
    "Loc_VIP": frozenset(
        [
            "left",
            "right",
            "clockwise",
            "counterclockwise",
            "anticlockwise",
            "forward",
            "back",
            "backward",
            "up",
            "down",
            "straight",
            "curve",
        ]
    ),
    "Body_VIP": frozenset(
        [
            "arm",
            "chin",
            "foot",
            "feet",
            "face",
            "hand",
            "mouth",
            "leg",
            "waist",
            "eye",
            "knee",
            "shoulder",
            "thigh",
        ]
    ),
    "Obj_VIP": frozenset(
        [
            "stair",
            "dumbbell",
            "chair",
            "window",
            "floor",
            "car",
            "ball",
            "handrail",
            "baseball",
            "basketball",
        ]
    ),
    "Act_VIP": frozenset(
        [
            "walk",
            "run",
            "swing",
            "pick",
            "bring",
            "kick",
            "put",
            "squat",
            "throw",
            "hop",
            "dance",
            "jump",
            "turn",
            "stumble",
            "stop",
            "sit",
            "lift",
            "lower",
            "raise",
            "wash",
            "stand",
            "kneel",
            "stroll",
            "rub",
            "bend",
            "balance",
            "flap",
            "jog",
            "shuffle",
            "lean",
            "rotate",
            "spin",
            "spread",
            "climb",
        ]
    ),
    "Desc_VIP": frozenset(
        [
            "slowly",
            "carefully",
            "fast",
            "careful",
            "slow",
            "quickly",
            "happy",
            "angry",
            "sad",
            "happily",
            "angrily",
            "sadly",
        ]
    ),
}


# ---------------------------------------------------------------- word vectors
class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only what pickle builds without importing: dict, list, tuple, str, int,
    float. Any class or function reference (the way a pickle runs code) is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain containers)")


def _load_plain_pickle(path: Path):
    if not path.is_file():
        raise EvalError(f"word vectoriser file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise EvalError(f"{path}: not a plain-container pickle ({type(e).__name__}: {e})") from e


class WordVectorizer:
    """Guo's GloVe vectoriser: ``vectorizer["walk/VERB"] -> (vector (D,), pos one-hot (15,))``.

    Reads ``<prefix>_data.npy`` (V, D), ``<prefix>_words.pkl`` (list of V words) and
    ``<prefix>_idx.pkl`` ({word: row}) from a local folder (the official ``glove/`` holds
    ``our_vab_*``). Unknown words map to ``unk`` with POS ``OTHER``; words of the VIP lists get
    their VIP category whatever their tag, as in the released evaluators."""

    def __init__(self, folder: str | Path, prefix: str = "our_vab"):
        folder = Path(folder)
        data = folder / f"{prefix}_data.npy"
        if not data.is_file():
            raise EvalError(f"word vectoriser file not found: {data}")
        try:
            vectors = np.load(data, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise EvalError(f"{data}: not a plain .npy array ({e})") from None
        if vectors.ndim != 2 or vectors.dtype.kind != "f":
            raise EvalError(f"{data}: expected a float (V, D) array, found {vectors.shape}")
        words = _load_plain_pickle(folder / f"{prefix}_words.pkl")
        idx = _load_plain_pickle(folder / f"{prefix}_idx.pkl")
        if not isinstance(words, list) or not isinstance(idx, dict):
            raise EvalError(f"{folder}: {prefix}_words.pkl must hold a list, _idx.pkl a dict")
        try:
            self.word2vec = {w: vectors[idx[w]] for w in words}
        except (KeyError, IndexError, TypeError) as e:
            raise EvalError(f"{folder}: word {e} has no row in {data.name}") from None
        if "unk" not in self.word2vec:
            raise EvalError(f"{folder}: the vocabulary has no 'unk' entry")
        self.dim = vectors.shape[1]

    def __len__(self) -> int:
        return len(self.word2vec)

    @staticmethod
    def pos_one_hot(pos: str) -> np.ndarray:
        """(15,) one-hot of a POS category (anything unknown is ``OTHER``)."""
        out = np.zeros(len(POS_CATEGORIES))
        out[POS_CATEGORIES.index(pos) if pos in POS_CATEGORIES else -1] = 1
        return out

    def __getitem__(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        word, _, pos = token.rpartition("/")
        if word not in self.word2vec:
            return self.word2vec["unk"], self.pos_one_hot("OTHER")
        vip = next((k for k, ws in _VIP_WORDS.items() if word in ws), None)
        return self.word2vec[word], self.pos_one_hot(vip or pos)


# ---------------------------------------------------------------- encoders
def _init(module: nn.Module) -> None:
    # Guo's init (xavier-normal weights, zero bias) so a fresh evaluator trains as theirs does
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _head(hidden: int, out: int) -> nn.Sequential:
    # indices 0, 1, 3 carry weights: the official state dict names them output_net.{0,1,3}
    return nn.Sequential(
        nn.Linear(hidden * 2, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, out),
    )


class MovementConvEncoder(nn.Module):
    """``(B, T, C) -> (B, T // 4, out)``: two conv1d (kernel 4, stride 2, pad 1), then Linear."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2),
            nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_net(self.main(x.transpose(1, 2)).transpose(1, 2))


class _BiGRUCo(nn.Module):
    """Bi-GRU from a learned initial state; the two last hidden states -> MLP."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = _head(hidden_size, output_size)
        _init(self.input_emb)
        _init(self.output_net)
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def _run(self, x: Tensor, lengths: Tensor) -> Tensor:
        # enforce_sorted=False sorts by length for cuDNN and returns h_n in the caller's
        # order: the reference sorts the batch itself, which changes nothing per sequence
        packed = pack_padded_sequence(
            self.input_emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        h0 = self.hidden.expand(-1, x.shape[0], -1).contiguous()
        _, last = self.gru(packed, h0)
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class TextEncoderBiGRUCo(_BiGRUCo):
    """``word_emb (B, L, W), pos_ohot (B, L, P), cap_lens (B,) -> (B, out)``."""

    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int):
        super().__init__(word_size, hidden_size, output_size)
        self.pos_emb = nn.Linear(pos_size, word_size)
        _init(self.pos_emb)

    def forward(self, word_emb: Tensor, pos_ohot: Tensor, cap_lens: Tensor) -> Tensor:
        return self._run(word_emb + self.pos_emb(pos_ohot), cap_lens)


class MotionEncoderBiGRUCo(_BiGRUCo):
    """``movements (B, N, latent), lengths (B,) in movement steps -> (B, out)``."""

    def forward(self, movements: Tensor, lengths: Tensor) -> Tensor:
        return self._run(movements, lengths)


def _check_tensor(x, name: str, ndim: int, last: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim != ndim or (last is not None and x.shape[-1] != last):
        shape = ("B", "L", last) if ndim == 3 else ("B",)
        raise EvalError(f"{name}: expected shape {shape}, found {tuple(x.shape)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise EvalError(f"{name} contains NaN/inf")
    return x


def _check_lengths(lengths, name: str, batch: int, low: int, high: int) -> Tensor:
    lengths = _check_tensor(lengths, name, 1).long()
    if lengths.shape[0] != batch:
        raise EvalError(f"{name}: expected {batch} lengths, found {lengths.shape[0]}")
    if len(lengths) and (lengths.min() < low or lengths.max() > high):
        raise EvalError(
            f"{name}: expected values in [{low}, {high}], found [{int(lengths.min())}, "
            f"{int(lengths.max())}]"
        )
    return lengths


class T2MEvaluator(nn.Module, PyTorchModelHubMixin):
    """Guo et al. 2022's text/motion matching evaluator (``text_mot_match``).

    ``encode_text(word_emb (B, L, dim_word), pos_ohot (B, L, dim_pos_ohot), cap_lens (B,))``
    and ``encode_motion(motion (B, T, dim_pose), m_lens (B,))`` give ``(B, dim_coemb_hidden)``
    rows in the caller's order. Motion must be z-scored with the statistics the evaluator was
    trained with (HumanML3D's ``t2m/meta/{mean,std}.npy`` for the released one); the last 4
    channels (foot contacts) are not used, as in the reference.
    """

    def __init__(
        self,
        *,
        dim_pose: int = 263,
        dim_word: int = 300,
        dim_pos_ohot: int = 15,
        dim_text_hidden: int = 512,
        dim_coemb_hidden: int = 512,
        dim_movement_enc_hidden: int = 512,
        dim_movement_latent: int = 512,
        dim_motion_hidden: int = 1024,
        unit_length: int = 4,
    ):
        super().__init__()
        if dim_pose <= 4:
            raise EvalError(f"dim_pose must exceed the 4 foot-contact channels, found {dim_pose}")
        if unit_length != 4:
            # the two stride-2 convolutions fix the movement step at 4 frames
            raise EvalError(f"unit_length must be 4 (two stride-2 convs), found {unit_length}")
        self.dim_pose, self.dim_word, self.dim_pos_ohot = dim_pose, dim_word, dim_pos_ohot
        self.unit_length = unit_length
        self.text_encoder = TextEncoderBiGRUCo(
            dim_word, dim_pos_ohot, dim_text_hidden, dim_coemb_hidden
        )
        self.movement_encoder = MovementConvEncoder(
            dim_pose - 4, dim_movement_enc_hidden, dim_movement_latent
        )
        self.motion_encoder = MotionEncoderBiGRUCo(
            dim_movement_latent, dim_motion_hidden, dim_coemb_hidden
        )

    @classmethod
    def guo2022(cls, **kw) -> T2MEvaluator:
        """The released HumanML3D evaluator's size (``t2m``: 263-d motion, 300-d GloVe)."""
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw) -> T2MEvaluator:
        """CPU-test size (32-d everywhere)."""
        sizes = dict(
            dim_word=16,
            dim_text_hidden=32,
            dim_coemb_hidden=32,
            dim_movement_enc_hidden=32,
            dim_movement_latent=32,
            dim_motion_hidden=32,
        )
        return cls(**{**sizes, **kw})

    @property
    def embed_dim(self) -> int:
        return self.text_encoder.output_net[-1].out_features

    def encode_text(self, word_emb: Tensor, pos_ohot: Tensor, cap_lens: Tensor) -> Tensor:
        """``(B, L, dim_word), (B, L, dim_pos_ohot), (B,) words -> (B, D)``."""
        word_emb = _check_tensor(word_emb, "word_emb", 3, self.dim_word)
        pos_ohot = _check_tensor(pos_ohot, "pos_ohot", 3, self.dim_pos_ohot)
        if pos_ohot.shape[:2] != word_emb.shape[:2]:
            raise EvalError(
                f"pos_ohot {tuple(pos_ohot.shape)} and word_emb {tuple(word_emb.shape)}: "
                "expected the same (B, L)"
            )
        lens = _check_lengths(cap_lens, "cap_lens", word_emb.shape[0], 1, word_emb.shape[1])
        p = next(self.parameters())
        return self.text_encoder(word_emb.to(p), pos_ohot.to(p), lens)

    def encode_motion(self, motion: Tensor, m_lens: Tensor) -> Tensor:
        """``(B, T, dim_pose)`` normalised motion, ``(B,)`` frames -> ``(B, D)``."""
        motion = _check_tensor(motion, "motion", 3, self.dim_pose)
        u = self.unit_length
        lens = _check_lengths(m_lens, "m_lens", motion.shape[0], u, motion.shape[1])
        p = next(self.parameters())
        movements = self.movement_encoder(motion[..., :-4].to(p))
        # the GRU sees whole 4-frame movement steps only (trailing frames are dropped)
        return self.motion_encoder(movements, torch.div(lens, u, rounding_mode="floor"))

    @classmethod
    def from_reference_checkpoint(
        cls, path: str | Path, *, map_location: str | torch.device = "cpu", **sizes
    ) -> T2MEvaluator:
        """Load Guo's ``text_mot_match/model/finest.tar`` (keys ``text_encoder``,
        ``movement_encoder``, ``motion_encoder``) with ``torch.load(weights_only=True)``; sizes
        are read from the tensors (``sizes`` may set ``unit_length``)."""
        ckpt = load_torch_file(path, "evaluator checkpoint")
        parts = ("text_encoder", "movement_encoder", "motion_encoder")
        if not isinstance(ckpt, Mapping) or any(k not in ckpt for k in parts):
            found = list(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
            raise EvalError(f"{path}: expected keys {list(parts)}, found {found}")
        try:
            t, mv, mo = (ckpt[k] for k in parts)
            inferred = dict(
                dim_word=t["pos_emb.weight"].shape[0],
                dim_pos_ohot=t["pos_emb.weight"].shape[1],
                dim_text_hidden=t["input_emb.weight"].shape[0],
                dim_coemb_hidden=t["output_net.3.weight"].shape[0],
                dim_pose=mv["main.0.weight"].shape[1] + 4,
                dim_movement_enc_hidden=mv["main.0.weight"].shape[0],
                dim_movement_latent=mv["main.3.weight"].shape[0],
                dim_motion_hidden=mo["input_emb.weight"].shape[0],
            )
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise EvalError(f"{path}: missing or malformed tensor {e}") from None
        model = cls(**{**inferred, **sizes})
        for k in parts:
            try:
                getattr(model, k).load_state_dict(ckpt[k])
            except RuntimeError as e:
                raise EvalError(f"{path}: {k}: {' '.join(str(e).split())[:400]}") from None
        return model.to(map_location).eval()


# ---------------------------------------------------------------- training loss
class ContrastiveOutput(NamedTuple):
    loss: Tensor  # loss_pos + loss_neg
    loss_pos: Tensor
    loss_neg: Tensor


def contrastive_loss(
    text_emb: Tensor,
    motion_emb: Tensor,
    *,
    margin: float = 10.0,
    generator: torch.Generator | None = None,
) -> ContrastiveOutput:
    """Guo's margin contrastive loss over ``(B, D)`` embeddings: matched rows are pulled
    together (mean squared distance) and each text is pushed at least ``margin`` away from
    the motion ``s`` rows further on (``s`` drawn per call; 10 is Guo's ``negative_margin``).

    Guo draws ``s`` from ``[0, B - 1)``, so a batch can have ``s = 0`` and push matched pairs
    apart; we draw from ``[1, B)`` so every negative is a true mismatch."""
    if text_emb.shape != motion_emb.shape or text_emb.ndim != 2 or len(text_emb) < 2:
        raise EvalError(
            f"text_emb and motion_emb: expected two (B >= 2, D) tensors, found "
            f"{tuple(text_emb.shape)} and {tuple(motion_emb.shape)}"
        )
    b = len(text_emb)
    shift = int(torch.randint(1, b, (), generator=generator))
    d_pos = F.pairwise_distance(text_emb, motion_emb)
    d_neg = F.pairwise_distance(text_emb, motion_emb.roll(-shift, dims=0))
    loss_pos = d_pos.pow(2).mean()
    loss_neg = (margin - d_neg).clamp(min=0).pow(2).mean()
    return ContrastiveOutput(loss_pos + loss_neg, loss_pos, loss_neg)


# ---------------------------------------------------------------- metrics
def _features(x, name: str, min_rows: int = 1) -> np.ndarray:
    arr = to_numpy(x, name)
    if arr.ndim != 2 or arr.shape[0] < min_rows:
        raise EvalError(f"{name}: expected (N >= {min_rows}, D), found {arr.shape}")
    check_finite(arr, name)
    return arr


def _rng(generator) -> np.random.RandomState | np.random.Generator:
    # a legacy RandomState draws exactly the indices np.random.choice does after
    # np.random.seed(s): RandomState(s) reproduces the reference's own draws
    if generator is None or isinstance(generator, int | np.integer):
        return np.random.RandomState(generator)
    if isinstance(generator, np.random.RandomState | np.random.Generator):
        return generator
    raise EvalError(f"generator: expected a seed, RandomState or Generator, found {generator!r}")


def euclidean_distance_matrix(a, b) -> np.ndarray:
    """``(N, D), (M, D) -> (N, M)`` Euclidean distances, in the input dtype with the
    reference's expansion ``sqrt(|a|^2 - 2 a.b + |b|^2)`` (so float32 rounding matches)."""
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise EvalError(f"a and b must have the same D, found {a.shape} and {b.shape}")
    d2 = -2 * a @ b.T + np.sum(a**2, axis=1, keepdims=True) + np.sum(b**2, axis=1)
    # rounding can make a near-zero squared distance negative; the reference's sqrt would NaN
    return np.sqrt(np.maximum(d2, 0))


def _batches(n: int, batch_size: int) -> int:
    if batch_size < 1 or n < batch_size:
        raise EvalError(f"need at least one batch of {batch_size} samples, found {n}")
    return n // batch_size


def r_precision(text_emb, motion_emb, *, batch_size: int = 32, top_k: int = 3) -> np.ndarray:
    """``(top_k,)``: fraction of texts whose own motion is among the k nearest of the
    ``batch_size`` motions of its batch. Rows are cut into consecutive batches and the last
    partial batch is dropped, as the reference's ``drop_last`` loader does."""
    t, m = _features(text_emb, "text_emb"), _features(motion_emb, "motion_emb")
    if t.shape != m.shape:
        raise EvalError(f"text_emb {t.shape} and motion_emb {m.shape} must match")
    n_batches = _batches(len(t), batch_size)
    hits = np.zeros(top_k)
    for i in range(n_batches):
        s = slice(i * batch_size, (i + 1) * batch_size)
        order = np.argsort(euclidean_distance_matrix(t[s], m[s]), axis=1)
        rank = np.argmax(order == np.arange(batch_size)[:, None], axis=1)
        hits += [(rank < k + 1).sum() for k in range(top_k)]
    return hits / (n_batches * batch_size)


def matching_score(text_emb, motion_emb, *, batch_size: int = 32) -> float:
    """MM-Dist: mean distance between each text and its own motion (same batches as
    :func:`r_precision`)."""
    t, m = _features(text_emb, "text_emb"), _features(motion_emb, "motion_emb")
    if t.shape != m.shape:
        raise EvalError(f"text_emb {t.shape} and motion_emb {m.shape} must match")
    n = _batches(len(t), batch_size) * batch_size
    total = 0.0
    for i in range(0, n, batch_size):
        s = slice(i, i + batch_size)
        total += np.trace(euclidean_distance_matrix(t[s], m[s]))
    return float(total / n)


def frechet_distance(gt_emb, gen_emb, *, eps: float = 1e-6) -> float:
    """FID between ``(N, D)`` and ``(M, D)`` embeddings: pytorch-fid's formula as T2M-GPT's
    ``calculate_frechet_distance`` (no ``eps`` unless the product is singular)."""
    a, b = _features(gt_emb, "gt_emb", 2), _features(gen_emb, "gen_emb", 2)
    if a.shape[1] != b.shape[1]:
        raise EvalError(f"gt_emb {a.shape} and gen_emb {b.shape} must have the same D")
    value = frechet_distance_from_stats(
        np.mean(a, axis=0),
        np.cov(a, rowvar=False),
        np.mean(b, axis=0),
        np.cov(b, rowvar=False),
        eps=eps,
        variant="cvpr24",
    )
    if value == CVPR24_FAILURE_VALUE:
        raise EvalError("FID: the covariance product's square root has a large imaginary part")
    return value


def diversity(emb, times: int = 300, *, generator=None) -> float:
    """Mean distance between ``times`` random pairs of rows of ``(N, D)``. ``times`` falls
    to ``min(100, N - 1)`` when ``N <= times`` (the reference uses 100 below 300 samples)."""
    x = _features(emb, "emb", 2)
    n = len(x)
    if n <= times:
        times = min(100, n - 1)
    rng = _rng(generator)
    first = rng.choice(n, times, replace=False)
    second = rng.choice(n, times, replace=False)
    return float(linalg.norm(x[first] - x[second], axis=1).mean())


def multimodality(emb, times: int = 10, *, generator=None) -> float:
    """``(N, R, D)``: R generations per caption; mean distance of ``times`` random pairs of
    generations within each caption (reference: R = 30, times = 10; needs R > times)."""
    x = to_numpy(emb, "emb")
    if x.ndim != 3 or x.shape[1] <= times:
        raise EvalError(f"emb: expected (N, R > {times}, D), found {x.shape}")
    check_finite(x, "emb")
    rng = _rng(generator)
    first = rng.choice(x.shape[1], times, replace=False)
    second = rng.choice(x.shape[1], times, replace=False)
    return float(linalg.norm(x[:, first] - x[:, second], axis=2).mean())


def t2m_metrics(
    text_emb,
    motion_emb,
    *,
    batch_size: int = 32,
    top_k: int = 3,
    diversity_times: int = 300,
    generator=None,
) -> dict[str, float]:
    """``r_precision_top1..k``, ``matching_score`` and ``diversity`` of ``(N, D)`` pairs."""
    r = r_precision(text_emb, motion_emb, batch_size=batch_size, top_k=top_k)
    out = {f"r_precision_top{k + 1}": float(v) for k, v in enumerate(r)}
    out["matching_score"] = matching_score(text_emb, motion_emb, batch_size=batch_size)
    out["diversity"] = diversity(motion_emb, diversity_times, generator=generator)
    return out


class T2MMetrics(Metric):
    """Accumulating twin of :func:`t2m_metrics`: ``update(text_emb (B, D), motion_emb (B, D),
    gt_motion_emb=None)``; ``compute()`` adds ``fid`` when ground-truth embeddings were given.
    Rows keep their update order, so batches of 32 reproduce the reference's batches."""

    full_state_update = False

    def __init__(
        self,
        *,
        batch_size: int = 32,
        top_k: int = 3,
        diversity_times: int = 300,
        seed: int | None = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.batch_size, self.top_k = batch_size, top_k
        self.diversity_times, self.seed = diversity_times, seed
        for name in ("text", "motion", "gt"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, text_emb: Tensor, motion_emb: Tensor, gt_motion_emb: Tensor | None = None):
        text_emb, motion_emb = torch.as_tensor(text_emb), torch.as_tensor(motion_emb)
        if text_emb.ndim != 2 or text_emb.shape != motion_emb.shape:
            raise EvalError(
                f"text_emb {tuple(text_emb.shape)} and motion_emb {tuple(motion_emb.shape)}: "
                "expected two (B, D) tensors of one shape"
            )
        self.text.append(text_emb.detach())
        self.motion.append(motion_emb.detach())
        if gt_motion_emb is not None:
            self.gt.append(torch.as_tensor(gt_motion_emb).detach())

    def compute(self) -> dict[str, float]:
        text, motion = dim_zero_cat(self.text), dim_zero_cat(self.motion)
        out = t2m_metrics(
            text,
            motion,
            batch_size=self.batch_size,
            top_k=self.top_k,
            diversity_times=self.diversity_times,
            generator=self.seed,
        )
        if len(self.gt):
            out["fid"] = frechet_distance(dim_zero_cat(self.gt), motion)
        return out
