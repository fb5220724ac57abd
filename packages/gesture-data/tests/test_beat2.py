import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from gesture_data import DataError, Normalizer
from gesture_data.datasets import beat2
from gesture_data.datasets.textgrid import read_textgrid, write_textgrid
from gesture_data.datasets.windows import beat2_windows, collate, prepare_clip

CID = "2_scott_0_1_1"


def test_fixture_take_loads(beat2_clip, beat2_root):
    c = beat2_clip
    assert c.poses.shape == (1906, 165) and c.poses.dtype == np.float32
    assert c.trans.shape == (1906, 3) and c.expressions.shape == (1906, 100)
    assert c.betas.shape == (300,)
    assert c.fps == 30 and c.sample_rate == 16000 and c.speaker == 2
    assert c.audio.dtype == np.float32 and c.audio.shape == (1025558,)
    assert sf.info(str(beat2_root / "wave16k" / f"{CID}.wav")).subtype == "FLOAT"
    # 220 intervals in the words tier = 199 words + 21 silences
    assert len(c.words) == 199
    from praatio import textgrid as ptg

    tg = ptg.openTextgrid(str(beat2_root / "textgrid" / f"{CID}.TextGrid"), True)
    assert len(tg.getTier("words").entries) == 220
    assert len(c.phones) > 600
    assert c.words[:3] == [(1.42, 1.52, "the"), (1.52, 1.78, "first"), (1.78, 1.97, "thing")]
    np.testing.assert_allclose(c.trans.mean(0), [0.064, 1.303, -0.116], atol=2e-3)


def test_splits_and_speakers(beat2_root):
    assert beat2.read_split(beat2_root)[CID] == "test"
    assert beat2.list_clips(beat2_root, split="test", speakers=[2]) == [CID]
    assert beat2.list_clips(beat2_root, split="train") == []
    assert beat2.list_clips(beat2_root, speakers=[3]) == []
    with pytest.raises(DataError, match="unknown speaker"):
        beat2.list_clips(beat2_root, speakers=[99])
    with pytest.raises(DataError, match="speaker"):
        beat2.speaker_of("scott_0_1_1")


def test_word_frames_closed_intervals_and_silence():
    vocab = beat2.Vocabulary(["a", "b"])
    words = [(0.1, 0.2, "a"), (0.2, 0.3, "b"), (0.4, 0.5, "zz")]  # 0.2 s = frame 6 exactly
    half_open = beat2.frame_word_indices(words, 18, 30, vocab)
    assert half_open[:10].tolist() == [0, 0, 0, 2, 2, 2, 3, 3, 3, 0]
    # the reference loaders' rule: [start, end], the earlier word wins a shared boundary,
    # and frames outside any word get the given silence index
    closed = beat2.frame_word_indices(words, 18, 30, vocab, closed=True, silence=vocab.UNK)
    assert closed[:10].tolist() == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert closed[12:16].tolist() == [1, 1, 1, 1] and closed[16] == 1  # "zz" is unknown


def test_word_frames_and_audio_windows_line_up(beat2_clip):
    c = beat2_clip
    vocab = beat2.Vocabulary.build([c])
    idx = beat2.frame_word_indices(c.words, c.num_frames, c.fps, vocab)
    # "thing" spans 1.78-1.97 s -> frames 54..59 (1.8 s .. 1.9667 s)
    frames = np.flatnonzero(idx == vocab["thing"])
    first = frames[frames < 100]
    assert first.tolist() == [54, 55, 56, 57, 58, 59]
    assert idx[:42].max() == 0  # silence before the first word at 1.42 s
    # every spoken word's middle frame carries its index
    for s, e, w in c.words[:50]:
        assert idx[int((s + e) / 2 * 30)] == vocab[w]
    # a window's audio slice covers the same seconds as its frames
    prep = prepare_clip(c, vocab)
    from gesture_data.datasets.windows import WindowDataset

    ds = WindowDataset([prep], pose_length=64, stride=20)
    item = ds[2]  # frames 40..103 -> 1.3333 s .. 3.4667 s
    assert item["start"] == 40
    a0 = round(40 * 16000 / 30)
    np.testing.assert_array_equal(item["audio"][:, 0].numpy(), prep["audio"][a0 : a0 + 34133, 0])
    np.testing.assert_array_equal(item["words"].numpy(), idx[40:104])
    # speech is louder inside "first thing" than in the leading silence
    seg = lambda s, e: c.audio[int(s * 16000) : int(e * 16000)]  # noqa: E731
    assert np.abs(seg(1.52, 1.97)).mean() > 3 * np.abs(seg(0.2, 1.2)).mean()


def test_dataset_cache_and_collate(beat2_root, tmp_path):
    n = Normalizer.from_beat2(beat2_root / "mean_std")
    ds, vocab = beat2_windows(beat2_root, split="test", cache_dir=tmp_path, normalizer=n)
    assert len(ds) == (1906 - 64) // 20 + 1 == 93
    assert len(vocab) > 100
    b = collate([ds[i] for i in range(3)])
    assert b["upper"].shape == (3, 64, 78) and b["hands"].shape == (3, 64, 180)
    assert b["lower"].shape == (3, 64, 57) and b["face"].shape == (3, 64, 100)
    assert b["audio"].shape == (3, 34133, 2) and b["words"].dtype == torch.int64
    # normalised with the published statistics: roughly zero-mean, unit-scale
    assert abs(float(b["upper"].mean())) < 0.5 and 0.3 < float(b["upper"].std()) < 3
    entries = [p for p in tmp_path.iterdir()]
    assert len(entries) == 1 and entries[0].name.startswith("beat2-")
    assert {p.name for p in entries[0].iterdir()} >= {"index.json", "rot6d.npy", "audio.npy"}
    ds2, _ = beat2_windows(beat2_root, split="test", cache_dir=tmp_path, normalizer=n)
    assert isinstance(ds2.clips[0]["rot6d"], np.memmap)
    torch.testing.assert_close(ds2[5]["hands"], ds[5]["hands"])
    beat2_windows(beat2_root, split="test", cache_dir=tmp_path, audio_rep="mel")
    assert len(list(tmp_path.iterdir())) == 2  # settings changed -> new entry


@pytest.fixture
def copy_root(beat2_root, tmp_path):
    r = tmp_path / "beat"
    for sub in ("smplxflame_30", "wave16k", "textgrid"):
        (r / sub).mkdir(parents=True)
    shutil.copy(beat2_root / "test.csv", r / "test.csv")
    return r


def _write_take(root, cid, poses, seconds=None, tg=True, sr=16000, subtype="PCM_16"):
    t = poses.shape[0]
    np.savez(
        root / "smplxflame_30" / f"{cid}.npz",
        poses=poses.astype(np.float32),
        trans=np.zeros((t, 3)),
        expressions=np.zeros((t, 100)),
        betas=np.zeros(300, np.float32),
        mocap_frame_rate=np.int32(30),
    )
    n = int((seconds if seconds is not None else t / 30) * sr)
    audio = 0.1 * np.sin(np.arange(n) / sr * 2 * np.pi * 220).astype(np.float32)
    sf.write(str(root / "wave16k" / f"{cid}.wav"), audio, sr, subtype=subtype)
    if tg:
        write_textgrid(
            root / "textgrid" / f"{cid}.TextGrid",
            {"words": [(0.1, 0.4, "hello"), (0.5, 0.9, "world")]},
            xmax=t / 30,
        )


def test_pcm16_and_resampling(copy_root):
    _write_take(copy_root, "3_solomon_0_1_1", np.zeros((60, 165)), sr=44100)
    c = beat2.load_clip(copy_root, "3_solomon_0_1_1")
    assert c.sample_rate == 16000 and c.audio.dtype == np.float32
    assert abs(c.audio.size - 32000) <= 1
    # 220 Hz sine survives resampling: zero crossings ~ 2 * 220 per second
    zc = np.count_nonzero(np.diff(np.signbit(c.audio[1000:17000])))
    assert abs(zc - 440) <= 4
    assert c.words == [(0.1, 0.4, "hello"), (0.5, 0.9, "world")]


def test_bad_inputs_give_data_errors(copy_root):
    cid = "4_lawrence_0_1_1"
    npz = copy_root / "smplxflame_30" / f"{cid}.npz"
    _write_take(copy_root, cid, np.zeros((60, 165)))
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=f"{cid}.npz.*(corrupt|truncated)"):
        beat2.load_clip(copy_root, cid)
    bad = np.zeros((60, 165))
    bad[7, 4] = np.nan
    _write_take(copy_root, cid, bad)
    with pytest.raises(DataError, match=r"key 'poses'.*non-finite.*frame 7"):
        beat2.load_clip(copy_root, cid)
    _write_take(copy_root, cid, np.zeros((60, 162)))
    with pytest.raises(DataError, match=r"key 'poses'.*expected \(60, 165\), found \(60, 162\)"):
        beat2.load_clip(copy_root, cid)
    np.savez(npz, poses=np.zeros((60, 165), np.float32))
    with pytest.raises(DataError, match=r"key 'trans'.*missing"):
        beat2.load_clip(copy_root, cid)
    _write_take(copy_root, cid, np.zeros((60, 165)), seconds=9.0)
    with pytest.raises(DataError, match=r"\.wav.*lengths differ"):
        beat2.load_clip(copy_root, cid)
    _write_take(copy_root, cid, np.zeros((60, 165)))
    (copy_root / "wave16k" / f"{cid}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match=r"\.wav.*cannot read"):
        beat2.load_clip(copy_root, cid)
    _write_take(copy_root, cid, np.zeros((60, 165)))
    tgp = copy_root / "textgrid" / f"{cid}.TextGrid"
    tgp.write_text(tgp.read_text()[:300])
    with pytest.raises(DataError, match=r"TextGrid"):
        beat2.load_clip(copy_root, cid)
    with pytest.raises(DataError, match="unknown speaker"):
        beat2.load_clip(copy_root, "77_nobody_0_1_1")
    with pytest.raises(DataError, match="missing"):
        beat2.load_clip(copy_root, "5_stewart_0_1_1")


def test_overlapping_textgrid(tmp_path):
    p = tmp_path / "o.TextGrid"
    p.write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 2\n'
        "tiers? <exists>\nsize = 1\nitem []:\n    item [1]:\n"
        '        class = "IntervalTier"\n        name = "words"\n        xmin = 0\n'
        "        xmax = 2\n        intervals: size = 2\n"
        "        intervals [1]:\n            xmin = 0\n            xmax = 1.2\n"
        '            text = "a"\n        intervals [2]:\n            xmin = 1.0\n'
        '            xmax = 2\n            text = "b"\n'
    )
    with pytest.raises(DataError, match=r"o.TextGrid.*overlap"):
        read_textgrid(p)
    with pytest.raises(DataError, match="tier missing"):
        write_textgrid(p, {"phones": [(0, 1, "AH0")]})
        read_textgrid(p)


def test_torch_dataloader_over_synthetic(tmp_path):
    from torch.utils.data import DataLoader

    from gesture_data.datasets import synthetic
    from gesture_data.datasets.windows import clip_windows

    clips = synthetic.make_corpus(2, 4.0, seed=1)
    ds, vocab = clip_windows(clips, pose_length=32, stride=16, audio_rep="mel")
    assert len(ds) == 2 * ((120 - 32) // 16 + 1)
    dl = DataLoader(
        ds,
        batch_size=4,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    b = next(iter(dl))
    assert b["audio"].shape == (4, 32, 80) and b["hands"].shape == (4, 32, 180)
    # words in the window are the clip's words at those frames
    i = int(b["clip"][0]), int(b["start"][0])
    idx = beat2.frame_word_indices(clips[i[0]].words, 120, 30, vocab)
    np.testing.assert_array_equal(b["words"][0].numpy(), idx[i[1] : i[1] + 32])
