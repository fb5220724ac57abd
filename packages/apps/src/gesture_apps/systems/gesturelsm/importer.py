"""``gesture import gesturelsm``: GestureLSM's released files -> a bundle ``gesture generate`` runs.

Reads, without unpickling anything but tensors and the vocabulary's fields:

* the generator checkpoint (``{"model_state_dict": ...}``, ``module.``-prefixed) and its yaml
  (``configs_new/shortcut_rvqvae_128.yaml``) -> :class:`~.reference.GestureLSM`;
* the part RVQ-VAEs ``net_300000_{upper,hands,lower}.pth`` (``{"net": ...}``) ->
  :class:`motion_tokenizers.MultiPartTokenizer` (``latent_scale`` from the yaml);
* BEAT2's ``beatx_2_330_{mean,std}.npy`` and ``beatx_2_trans_{mean,std}.npy`` -> the normaliser;
* ``weights/vocab.pkl`` (restricted unpickler) -> the word list.

The bundle's generator keeps the released layout (``"layout": "reference"`` in its config), so
generation reproduces the release; see :mod:`.pipeline` for the reference's windowing rules it
follows. The word table is stored in our vocabulary's order (``<pad>`` 0, ``<unk>`` 1, then the
reference's ``<SOS>``, ``<EOS>`` and its words in their order), which only permutes rows.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from gesture_apps.errors import ConfigError
from gesture_apps.systems.gesturelsm.export import write_lsm_bundle
from gesture_apps.systems.gesturelsm.release import GestureLSM
from gesture_data import Normalizer
from gesture_data.datasets.beat2 import Vocabulary
from gesture_data.datasets.vocab_pickle import PAD, UNK, read_vocab_pickle
from motion_tokenizers import BEAT2_PART_DIMS, MultiPartTokenizer
from motion_tokenizers.convert import from_reference_checkpoint

# the generator's parts in channel order, and the released RVQ file of each
PARTS = ("upper", "hands", "lower")
RVQ_FILES = {p: f"net_300000_{p}.pth" for p in PARTS}


def reorder_vocabulary(words: list[str]) -> tuple[Vocabulary, list[int]]:
    """Our :class:`Vocabulary` for the reference's word list, and for each of our indices the
    reference index it stands for (``<pad>`` = reference ``<PAD>``, ``<unk>`` = ``<UNK>``)."""
    rest = [i for i in range(len(words)) if i not in (PAD, UNK)]
    vocab = Vocabulary()
    for i in rest:
        if words[i] in vocab.stoi:
            raise ConfigError(f"vocab.pkl: word {words[i]!r} collides with our reserved entries")
        vocab.add(words[i])
    return vocab, [PAD, UNK, *rest]


@torch.no_grad()
def import_gesturelsm(
    *,
    lsm: str | Path,
    config: str | Path | dict,
    rvq_dir: str | Path,
    mean_std: str | Path,
    vocab: str | Path,
    out: str | Path,
    rvq_files: dict[str, str] | None = None,
) -> Path:
    """Write a bundle at ``out`` from the released files; returns ``out``. Raises
    :class:`ConfigError` / ``CheckpointError`` / ``DataError`` naming the file at fault before
    anything is written."""
    model = GestureLSM.from_reference_checkpoint(lsm, config)
    cfg = model.config
    released = read_vocab_pickle(vocab)
    table = model.modality_encoder.text_pre_encoder_body.weight
    if len(released.words) != table.shape[0]:
        raise ConfigError(
            f"{vocab}: {len(released.words)} words, but the checkpoint's word table has "
            f"{table.shape[0]} rows"
        )
    ours, order = reorder_vocabulary(released.words)
    table.copy_(table[torch.tensor(order)])

    parts = {}
    for part in PARTS:
        path = Path(rvq_dir) / (rvq_files or RVQ_FILES)[part]
        tok = from_reference_checkpoint(path)
        if tok.input_dim != BEAT2_PART_DIMS[part] or tok.code_dim != model.denoiser.part_dim:
            raise ConfigError(
                f"{path}: a {tok.input_dim}-channel tokenizer with {tok.code_dim}-d latents; "
                f"the {part} part needs {BEAT2_PART_DIMS[part]} channels and "
                f"{model.denoiser.part_dim}-d latents"
            )
        if tok.downsample_factor != cfg["squeeze_scale"]:
            raise ConfigError(
                f"{path}: downsamples by {tok.downsample_factor}, the yaml's "
                f"vqvae_squeeze_scale is {cfg['squeeze_scale']}"
            )
        parts[part] = tok
    tokenizer = MultiPartTokenizer(parts, latent_scale=float(cfg["latent_scale"])).eval()
    full = Normalizer.from_beat2(mean_std)
    normalizer = Normalizer({p: full.stats[p] for p in PARTS})

    # the first window's seed: the latents of the mean pose standing still (normalised zeros);
    # the release's test loop seeds it with ground-truth latents, which new speech lacks
    still = {p: torch.zeros(1, cfg["pose_length"], BEAT2_PART_DIMS[p]) for p in PARTS}
    model.first_seed.copy_(tokenizer.encode_continuous(still)[0, : cfg["pre_frames"]])

    spec = {
        "version": 2,
        "layout": "reference",
        "parts": list(PARTS),
        "pose_length": cfg["pose_length"],
        "factor": cfg["squeeze_scale"],
        "vocab_size": len(ours),
        "reference": cfg,
        "sample": {"steps": int(cfg["n_steps"]), "guidance": float(cfg["guidance_scale"])},
    }
    with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
        return write_lsm_bundle(
            Path(out),
            spec=spec,
            generator=model,
            tokenizer=tokenizer,
            normalizer=normalizer,
            vocab=ours,
        )
