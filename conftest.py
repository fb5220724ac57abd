"""Workspace-wide test setup (loaded before every package's own conftest).

CI runs the suite in two pytest-xdist workers (``addopts`` in pyproject.toml): the test models
are tiny and most modules already pin torch to one intra-op thread, so a second process, not a
second thread, is what uses the second core. Each worker is held to one OpenMP thread before
torch is imported: two workers with two threads each on two cores make OpenMP's spinning
workers wait on cores the other process holds (a 10x slowdown measured on the CI box).
Child processes the tests start (DDP ranks, CLI runs) inherit the setting.

Each worker also gets its own numba cache folder: librosa's jitted functions cache to their
package folder, and two workers compiling into it at once on a fresh install left a file that
made the next load segfault (seen once in CI, in ``librosa.onset``'s peak picking).
"""

import atexit
import os
import shutil
import tempfile

_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"numba-{_worker}-")
    atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)
