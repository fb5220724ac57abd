"""Preprocessed-array cache: memory-mapped ``.npy`` per stream, keyed by a content hash.

A cache entry is ``<cache_dir>/<name>-<key>/`` holding ``<stream>.npy`` (all clips
concatenated along axis 0), ``index.json`` (per clip: id and the start/length of each
stream) and nothing else. ``key`` hashes the source files (path, size, mtime) and the
settings, so changing either builds a new entry. An entry is built in a temporary folder
and renamed into place, so a crash never leaves a half-written cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import new_folder_beside
from .errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def cache_key(sources: Iterable[str | Path], settings: dict) -> str:
    """16-hex-digit hash of source file identities and a JSON-able settings dict."""
    h = hashlib.sha256()
    h.update(f"v{FORMAT_VERSION}".encode())
    for s in sorted(str(p) for p in sources):
        p = Path(s)
        st = p.stat() if p.exists() else None
        ident = (str(p.resolve()), st.st_size, st.st_mtime_ns) if st else (str(p), -1, -1)
        h.update(json.dumps(ident).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass
class CachedArrays:
    """A read-only cache entry: ``streams[name]`` are memory-mapped arrays, ``clips`` the
    per-clip index ``{"id": ..., "<stream>": [start, length], ...}``."""

    path: Path
    streams: dict[str, np.ndarray]
    clips: list[dict]

    def clip(self, i: int) -> dict[str, np.ndarray]:
        c = self.clips[i]
        return {k: v[c[k][0] : c[k][0] + c[k][1]] for k, v in self.streams.items()}


def build_cache(
    path: str | Path,
    items: Iterable[tuple[str, dict[str, np.ndarray]]],
    chunk_bytes: int = 64 << 20,
) -> CachedArrays:
    """Write ``(clip_id, {stream: array})`` items into ``path`` atomically and open it.

    Streams are appended to raw files clip by clip and turned into ``.npy`` at the end, so
    memory stays at one clip plus ``chunk_bytes`` whatever the dataset size."""
    path = Path(path)
    tmp = new_folder_beside(path)
    raws: dict = {}
    try:
        meta: dict[str, tuple[np.dtype, tuple]] = {}
        clips, offsets = [], {}
        for cid, arrays in items:
            entry = {"id": cid}
            for k, a in arrays.items():
                a = np.ascontiguousarray(a)
                if k not in meta:
                    meta[k] = (a.dtype, a.shape[1:])
                    raws[k] = open(tmp / f"{k}.raw", "wb")  # noqa: SIM115 - closed below
                elif a.shape[1:] != meta[k][1] or a.dtype != meta[k][0]:
                    raise DataError(
                        None,
                        "inconsistent stream shape/dtype",
                        key=f"{cid}/{k}",
                        expected=(meta[k][1], str(meta[k][0])),
                        found=(a.shape[1:], str(a.dtype)),
                    )
                raws[k].write(a.tobytes())
                entry[k] = [offsets.get(k, 0), int(a.shape[0])]
                offsets[k] = offsets.get(k, 0) + int(a.shape[0])
            clips.append(entry)
        for k, (dtype, tail) in meta.items():
            raws.pop(k).close()
            rows = offsets[k]
            out = np.lib.format.open_memmap(
                tmp / f"{k}.npy", mode="w+", dtype=dtype, shape=(rows, *tail)
            )
            row_bytes = max(1, int(np.prod(tail, dtype=np.int64)) * dtype.itemsize)
            step = max(1, chunk_bytes // row_bytes)
            src = (
                np.memmap(tmp / f"{k}.raw", dtype=dtype, mode="r", shape=(rows, *tail))
                if rows
                else np.zeros((0, *tail), dtype)
            )
            for r in range(0, rows, step):
                out[r : r + step] = src[r : r + step]
            out.flush()
            del out, src
            (tmp / f"{k}.raw").unlink()
        (tmp / "index.json").write_text(json.dumps({"version": FORMAT_VERSION, "clips": clips}))
        try:
            os.replace(tmp, path)
        except OSError:
            # Another process finished the same entry first; theirs is equally valid.
            if not (path / "index.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        for f in raws.values():
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(path)


def open_cache(path: str | Path) -> CachedArrays:
    path = Path(path)
    idx = path / "index.json"
    try:
        meta = json.loads(idx.read_text())
    except FileNotFoundError:
        raise DataError(idx, "cache index missing") from None
    except json.JSONDecodeError as e:
        raise DataError(idx, f"corrupt cache index: {e}") from None
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(
            idx,
            "cache format version",
            key="version",
            expected=FORMAT_VERSION,
            found=meta.get("version"),
        )
    streams = {}
    for f in sorted(path.glob("*.npy")):
        try:
            streams[f.stem] = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f, f"corrupt cache array: {e}") from None
    return CachedArrays(path, streams, meta["clips"])


def cached(
    cache_dir: str | Path,
    name: str,
    sources: Iterable[str | Path],
    settings: dict,
    produce: Callable[[], Iterable[tuple[str, dict[str, np.ndarray]]]],
) -> CachedArrays:
    """Open the entry for (sources, settings), building it with ``produce()`` if absent."""
    key = cache_key(sources, settings)
    path = Path(cache_dir) / f"{name}-{key}"
    if (path / "index.json").exists():
        log.debug("cache hit %s", path)
        return open_cache(path)
    log.info("building cache %s", path)
    return build_cache(path, produce())
