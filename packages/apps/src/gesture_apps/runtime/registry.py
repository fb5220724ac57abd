"""The systems ``gesture train`` can train, by name.

An entry names its module by string so that the command line can list every system (and build
its ``--help``) without importing torch or the system itself. A new system adds one entry here
and a ``configs/<presets>/`` folder; ``gesture train <name>`` is generated from it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from gesture_apps.errors import GenerationError


@dataclass(frozen=True)
class SystemEntry:
    """One trainable system.

    ``module`` holds ``run(cfg, out_dir, *, resume, steps, progress) -> TrainResult``; the
    config class ``config`` (``"module:Class"``) is the saved run config; presets live in
    ``configs/<presets>/`` (``default_preset`` is used without ``--preset``); ``export`` is the
    folder of the run that holds the exported bundle; ``inputs`` are ``(flag, config key,
    help)`` options that take a folder (``--tokenizer DIR`` sets ``tokenizer=DIR``)."""

    name: str
    module: str
    config: str
    presets: str
    default_preset: str
    export: str
    help: str
    description: str
    aliases: tuple[str, ...] = ()
    inputs: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)
    generate: str | None = None  # "module:function" generating from this system's bundles
    # training stages: `gesture train <name> STAGE` sets the config key `stage`
    stages: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def config_class(self) -> Any:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def names(self) -> tuple[str, ...]:
        """The name and its aliases: what a saved config's ``recipe`` key may say."""
        return (self.name, *self.aliases)


SYSTEMS: dict[str, SystemEntry] = {}


def register(entry: SystemEntry) -> SystemEntry:
    if entry.name in SYSTEMS:
        raise ValueError(f"system {entry.name!r} is registered twice")
    SYSTEMS[entry.name] = entry
    return entry


def generator_of(system: str):
    """``generate(audio, *, checkpoint, textgrid, steps, guidance, seed, device, bf16) ->
    Motion`` of the bundles a system exports (``gesture generate`` dispatches on it)."""
    entry = get_system(system)
    if entry.generate is None:
        raise GenerationError(f"{system!r} bundles cannot generate motion from speech")
    module, _, name = entry.generate.partition(":")
    return getattr(importlib.import_module(module), name)


def get_system(name: str) -> SystemEntry:
    """The entry of ``name`` or one of its aliases (``lsm`` -> ``gesturelsm``)."""
    for entry in SYSTEMS.values():
        if name in entry.names:
            return entry
    raise GenerationError(f"unknown system {name!r} (known: {', '.join(SYSTEMS)})")


register(
    SystemEntry(
        name="tokenizer",
        module="gesture_apps.systems.tokenizer.train",
        config="gesture_apps.systems.tokenizer.config:TokenizerRecipeConfig",
        presets="tokenizer",
        default_preset="gesturelsm",
        export="tokenizer",
        help="RVQ-VAE motion tokenizers (GestureLSM's four body parts by default)",
        description=(
            "Train RVQ-VAE motion tokenizers on the synthetic corpus (default) or BEAT2 "
            "(--data beat2:PATH). Writes OUT/checkpoints/step_*/ (resumable with --resume) "
            "and OUT/tokenizer/ (a bundle: the tokenizers, their EMA and the normaliser)."
        ),
    )
)
register(
    SystemEntry(
        name="gesturelsm",
        aliases=("lsm",),
        module="gesture_apps.systems.gesturelsm.train",
        config="gesture_apps.systems.gesturelsm.config:LSMRecipeConfig",
        presets="gesturelsm",
        default_preset="gesturelsm",
        export="lsm",
        help="GestureLSM audio-to-gesture shortcut model on frozen tokenizer latents",
        description=(
            "Train GestureLSM's spatial-temporal shortcut denoiser on the latents of frozen "
            "multi-part tokenizers (--tokenizer: a `gesture train tokenizer` run folder), "
            "conditioned on onset+amplitude audio, words and seed frames, on the synthetic "
            "corpus (default) or BEAT2 (--data beat2:PATH). Writes OUT/checkpoints/step_*/ and "
            "OUT/lsm/ (the bundle `gesture generate --checkpoint` reads)."
        ),
        inputs=(("--tokenizer", "tokenizer", "tokenizer run folder; sets tokenizer="),),
        generate="gesture_apps.systems.gesturelsm.pipeline:generate",
    )
)
register(
    SystemEntry(
        name="reflow",
        module="gesture_apps.systems.gesturelsm.reflow",
        config="gesture_apps.systems.gesturelsm.reflow:ReflowRecipeConfig",
        presets="reflow",
        default_preset="gesturelsm",
        export="lsm",
        help="straighten a trained GestureLSM model on its own (noise, sample) pairs",
        description=(
            "Reflow: the teacher (--teacher: a `gesture train gesturelsm` run) samples every "
            "training window from seeded noise (20 Euler steps, guidance 2); a student "
            "initialised from it learns the shortcut objective on these (noise, sample, "
            "condition) triples. Writes OUT/lsm/ like `train gesturelsm` (sampled with guidance "
            "1, 2 steps by default)."
        ),
        inputs=(("--teacher", "teacher", "`train gesturelsm` run folder; sets teacher="),),
    )
)
register(
    SystemEntry(
        name="omniges",
        module="gesture_apps.systems.omniges.train",
        config="gesture_apps.systems.omniges.config:OmnigesRecipeConfig",
        presets="omniges",
        default_preset="omniges",
        export="omniges",
        help="Omniges any-to-any text / audio / gesture MMDiT (t2g g2t a2g g2a t2a a2t)",
        description=(
            "Train Omniges' MMDiT over three token streams encoded once by frozen codecs: "
            "gesture latents of a `gesture train tokenizer` run (--tokenizer), mel latents of "
            "an audio codec (--audio-codec) and text latents of a text VAE (--text-vae), with "
            "OmniFlow's per-stream timestep roles for the six tasks, on the synthetic corpus "
            "(default) or BEAT2 (--data beat2:PATH). Writes OUT/checkpoints/step_*/ and "
            "OUT/omniges/ (the bundle `gesture generate --checkpoint ... --task` reads)."
        ),
        inputs=(
            ("--tokenizer", "tokenizer", "tokenizer run folder; sets tokenizer="),
            ("--audio-codec", "audio_codec", "audio codec folder; sets audio_codec="),
            ("--text-vae", "text_vae", "text VAE folder; sets text_vae="),
        ),
    )
)
register(
    SystemEntry(
        name="omniges-audio",
        module="gesture_apps.systems.omniges.audio_recipe",
        config="gesture_apps.systems.omniges.audio_recipe:AudioCodecRecipeConfig",
        presets="omniges_audio",
        default_preset="audioldm2",
        export="audio_codec",
        help="Omniges' audio codec: AudioLDM2's mel VAE + HiFi-GAN vocoder",
        description=(
            "Train the audio codec `gesture train omniges --audio-codec` reads: AudioLDM2's "
            "mel VAE (mel L1 + KL) and a HiFi-GAN vocoder (multi-resolution STFT + mel L1) on "
            "the same 16 kHz segments of the synthetic corpus (default) or BEAT2's wavs "
            "(--data beat2:PATH). Writes OUT/checkpoints/step_*/ (resumable with --resume) and "
            "OUT/audio_codec/ (vae/ + vocoder/, latents scaled to unit std)."
        ),
    )
)
register(
    SystemEntry(
        name="omniges-text",
        module="gesture_apps.systems.omniges.text_recipe",
        config="gesture_apps.systems.omniges.text_recipe:TextVAERecipeConfig",
        presets="omniges_text",
        default_preset="default",
        export="text_vae",
        help="Omniges' text VAE: frozen encoder -> Q-Former latents -> GPT-2 decoder",
        description=(
            "Train the text VAE `gesture train omniges --text-vae` reads (OmniFlow's: a frozen "
            "sentence encoder, a Q-Former pooling it into latent tokens, a causal LM rebuilding "
            "the text) on synthetic sentences (default) or the transcript windows of BEAT2's "
            "TextGrids (--data beat2:PATH). Writes OUT/checkpoints/step_*/ (resumable with "
            "--resume) and OUT/text_vae/."
        ),
    )
)
register(
    SystemEntry(
        name="omnihuman",
        module="gesture_apps.systems.omnihuman.train",
        config="gesture_apps.systems.omnihuman.config:OmniHumanRecipeConfig",
        presets="omnihuman",
        default_preset="omnihuman",
        export="omnihuman",
        help="OmniHuman omni-conditions video DiT (audio, pose, text, reference image)",
        description=(
            "Train OmniHuman's flow-matching video DiT over the latents of a video VAE (--vae: "
            "a `gesture train omnihuman-vae` run or a Wan2.1 vae/ folder), driven by audio "
            "tokens, pose heatmaps, the caption and a reference image, in stages whose "
            "per-condition keep ratios follow OmniHuman (stronger condition, lower ratio), on "
            "the rendered synthetic corpus (default), BEAT2 (--data beat2:PATH) or a folder of "
            "mp4 + wav + keypoints (--data folder:PATH). Writes OUT/checkpoints/step_*/ and "
            "OUT/omnihuman/ (the bundle `gesture generate --reference --audio` reads)."
        ),
        inputs=(("--vae", "vae", "video VAE run or folder; sets vae="),),
    )
)
register(
    SystemEntry(
        name="omnihuman-vae",
        module="gesture_apps.systems.omnihuman.vae_recipe",
        config="gesture_apps.systems.omnihuman.vae_recipe:VideoVAERecipeConfig",
        presets="omnihuman_vae",
        default_preset="tiny",
        export="video_vae",
        help="OmniHuman's video VAE: Wan2.1's 3D causal VAE (4x time, 8x space)",
        description=(
            "Train the video VAE OmniHuman's video DiT works in: diffusers' AutoencoderKLWan "
            "(tiny by default, Wan2.1's architecture with --preset omnihuman_vae/wan, or "
            "model.pretrained=PATH to fine-tune a local Wan2.1 vae/ folder) with L1 + KL + "
            "edge L1 on random 1+4k-frame windows of the rendered synthetic corpus (default) "
            "or a video folder (--data folder:PATH). Writes OUT/checkpoints/step_*/ "
            "(resumable with --resume) and OUT/video_vae/ (latents normalised per channel)."
        ),
    )
)
register(
    SystemEntry(
        name="t2m-gpt",
        module="gesture_apps.systems.t2m_gpt.train",
        config="gesture_apps.systems.t2m_gpt.config:T2MRecipeConfig",
        presets="t2m_gpt",
        default_preset="t2m_gpt",
        export="t2m_gpt",
        help="T2M-GPT: utterance/caption -> motion codes of a VQ-VAE (Korean by default)",
        description=(
            "Train T2M-GPT's GPT over the codes of a frozen VQ-VAE (--tokenizer: a `gesture "
            "train tokenizer --preset tokenizer/t2m_gpt` run) on a HumanML3D-layout folder "
            "(--data DIR: KTubeUM, HumanML3D), conditioned on each caption's sentence embedding "
            "(multilingual-e5 by default, text.encoder=transformers:PATH for CLIP or KE-T5). "
            "Writes OUT/checkpoints/step_*/ (resumable with --resume) and OUT/t2m_gpt/ (the "
            "bundle `gesture generate --bundle DIR --text ...` reads)."
        ),
        inputs=(("--tokenizer", "tokenizer", "VQ-VAE tokenizer run folder; sets tokenizer="),),
    )
)
register(
    SystemEntry(
        name="t2m-evaluator",
        module="gesture_apps.systems.t2m_gpt.evaluator",
        config="gesture_apps.systems.t2m_gpt.evaluator:T2MEvaluatorRecipeConfig",
        presets="t2m_evaluator",
        default_preset="guo2022",
        export="t2m_evaluator",
        help="HumanML3D text/motion matching evaluator (Guo et al. 2022) for `gesture eval t2m`",
        description=(
            "Train Guo et al.'s text_mot_match evaluator (bi-GRU text encoder over word vectors "
            "and part-of-speech one-hots, movement convs + bi-GRU motion encoder) "
            "contrastively on a HumanML3D-layout folder (--data DIR: HumanML3D or KTubeUM; "
            "Korean captions by default, English with data.language=en data.glove=DIR) or "
            "the synthetic Korean corpus (default). Writes OUT/checkpoints/step_*/ and "
            "OUT/t2m_evaluator/ (the evaluator, its Mean/Std and caption language), which "
            "`gesture eval t2m --evaluator` reads."
        ),
    )
)
register(
    SystemEntry(
        name="semantic-gesticulator",
        module="gesture_apps.systems.semantic_gesticulator.train",
        config="gesture_apps.systems.semantic_gesticulator.config:SGRecipeConfig",
        presets="semantic_gesticulator",
        default_preset="sg",
        export="semantic_gesticulator",
        help="Semantic Gesticulator: RVQ-VAE + GPT per RVQ layer, semantic gesture injection",
        description=(
            "Train Semantic Gesticulator in three stages, each its own run: `rvq` (the two-part "
            "body/hands residual VQ-VAE on motion windows), `coarse --from RVQ_RUN` (the GPT of "
            "RVQ layer 0 on SG's 437-d audio features) and `fine --from COARSE_RUN` (the GPTs of "
            "layers 1-3), on the synthetic corpus (default) or BEAT2 (--data beat2:PATH). Each "
            "writes OUT/checkpoints/step_*/ and OUT/semantic_gesticulator/ (the bundle with every "
            "model trained so far; `gesture generate --checkpoint FINE_RUN --seg-dir SeG_dataset` "
            "reads the fine stage's)."
        ),
        inputs=(("--from", "previous", "the previous stage's run or bundle; sets previous="),),
        generate="gesture_apps.systems.semantic_gesticulator.pipeline:generate_motion",
        stages=("rvq", "coarse", "fine"),
    )
)
