"""The one way this project writes a file or a folder that someone may read: through a
temporary name in the same folder, then a rename (docs/reliability.md).  Readers see the old
version or the new one, never half of one; a failed or killed write leaves the old version
and no temporary behind (a killed process may leave a hidden ``.NAME.*`` temporary, never a
half-written ``NAME``).  Used by the run directory (fdpg_ray.train.sink), sweeps, reports, the
bundled-model builders and the vLLM start-up shim.

No third-party library is used: ``atomicwrites`` is archived and unmaintained, and none of
the maintained ones covers folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` with a temporary path beside ``path``, fsync it, rename it onto
    ``path``.  ``write`` may raise; the temporary is then removed and the exception passes.
    Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; when the block ends without an
    exception, move it onto ``dest``.

    ``overwrite=True`` replaces an existing ``dest`` (moved aside, then deleted: a folder
    cannot be renamed onto a non-empty one); ``overwrite=False`` keeps an existing ``dest``
    and discards the new folder (another process finished the same build first).  On an
    exception the temporary folder is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is shared like any folder
    try:
        yield tmp
        if dest.exists():
            if not overwrite:
                return
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
