"""Files written whole: a reader sees the old bytes or the new ones, never a part; and checked on read.

The one atomic write of the project (data cache, pool shards, checkpoints, labellers): a
temporary sibling, flushed and fsynced, then os.replace. A failed write (an exception, a full
disk) removes the temporary file and leaves the previous file as it was. A folder written whole
(a generator: diffusers' files and ours) is atomic_directory: filled as a temporary sibling, then
renamed into place, a folder already there moved aside first and deleted.
arrays_digest is the checksum stored beside cached arrays (data cache, pool shards) and checked
when they are read: a truncated or altered file is never used (DamagedFile).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np


class DamagedFile(ValueError):
    """A cached file that is truncated, altered or unreadable; the message is one line."""


def arrays_digest(*arrays: np.ndarray) -> str:
    """sha256 over each array's dtype, shape and bytes, in order."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data)                 # the buffer itself, not a copy of it
    return h.hexdigest()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:                  # a full disk, a file-size limit, a read-only folder
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"{path} was not written ({err.strerror or err}); the previous version, if any, "
                                 f"is unchanged and readable") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save, whole or not at all."""
    import torch

    with atomic_file(path) as f:
        torch.save(obj, f)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """An empty temporary folder to fill; it replaces the folder `path` when the block ends without error
    (a folder already there is moved aside, then deleted). On an error the temporary folder is removed
    and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.replace(path, old / "d")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checked_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], **extra: np.ndarray) -> None:
    """`arrays` (and `extra` entries, not summed) to an npz file at `path`, atomically, with a sha256 of the
    arrays (arrays_digest) that load_checked_arrays checks."""
    with atomic_file(path) as f:
        np.savez(f, **extra, **arrays, sha256=np.array(arrays_digest(*arrays.values())))


def load_checked_arrays(path: str | os.PathLike, keys: Sequence[str], extra: Sequence[str] = (),
                        require_sum: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the arrays named by `keys`, the `extra` entries) of a file save_checked_arrays wrote; DamagedFile, its
    message the reason in one line, when the file cannot be read or its arrays do not match their sum. A file
    without a sum (written before sums were) passes unless `require_sum`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in keys}
            others = {k: npz[k] for k in extra}
            stored = str(npz["sha256"]) if require_sum or "sha256" in npz.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise DamagedFile(" ".join(str(err).split()) or type(err).__name__) from None
    if stored is not None and stored != arrays_digest(*arrays.values()):
        raise DamagedFile("its checksum does not match its arrays")
    return arrays, others
