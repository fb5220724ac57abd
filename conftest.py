"""Workspace-wide test setup (loaded before every package's own conftest).

CI runs the suite in two pytest-xdist workers (``addopts`` in pyproject.toml): the test models
are tiny and most modules already pin torch to one intra-op thread, so a second process, not a
second thread, is what uses the second core. Each worker is held to one OpenMP thread before
torch is imported: two workers with two threads each on two cores make OpenMP's spinning
workers wait on cores the other process holds (a 10x slowdown measured on the CI box).
Child processes the tests start (DDP ranks, CLI runs) inherit the setting.

Each worker also gets its own numba cache folder: librosa's jitted functions cache to their
package folder, and two workers compiling into it at once on a fresh install left a file that
made the next load segfault (seen once in CI, in ``librosa.onset``'s peak picking). The folder
is kept between runs (``~/.cache/gesture-tests/numba-gwN``, held with a lock so two runs never
share one; a run that finds it locked takes a temporary folder): compiling librosa's feature
functions afresh costs each worker 20 s on an idle 2-core box and over a minute on a busy one.
"""

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path


def _numba_cache(worker: str) -> str:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = root / "gesture-tests" / f"numba-{worker}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "w")  # noqa: SIM115 - held for the process's life
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # read-only home or another run holds it
        folder = Path(tempfile.mkdtemp(prefix=f"numba-{worker}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return str(folder)
    _held.append(lock)
    return str(folder)


_held: list = []

_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache(_worker)
