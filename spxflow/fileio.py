"""Atomic writes and checksums: no output is ever left half-written under its final name.

Every writer renders in memory, writes atomically and returns a ``Written`` record (path, size
and sha256 of the bytes written), so a job can list its outputs in a manifest without reading
back a file it has just written.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds.

    The temporary name ends in ``suffix`` so that nothing that looks valid is left behind when
    the writer dies; on an exception the temporary file is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a writer of the same file that was killed (SIGKILL, node loss): one writer
    # per output path at a time (Snakemake's job model), so they are safe to remove.
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*{suffix}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Written:
    """A file this process wrote, with the size and sha256 of the bytes it wrote."""

    path: str
    size_bytes: int
    sha256: str

    def entry(self, root: str | os.PathLike = ".") -> dict:
        """The file's manifest entry (path relative to ``root``)."""
        return {
            "path": os.path.relpath(self.path, root),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Written:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Written(str(path), len(data), sha256_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Written:
    return write_bytes_atomic(path, text.encode("utf-8"))


def canonical_json(obj) -> str:
    """Deterministic JSON text (sorted keys), so equal content gives equal bytes and hashes."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=True) + "\n"


def write_json_atomic(path: str | os.PathLike, obj) -> Written:
    return write_text_atomic(path, canonical_json(obj))


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_parquet_atomic(path: str | os.PathLike, df: pd.DataFrame) -> Written:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    return write_bytes_atomic(path, buf.getvalue())


def write_csv_atomic(path: str | os.PathLike, df: pd.DataFrame, **kwargs) -> Written:
    return write_text_atomic(path, df.to_csv(None, index=False, lineterminator="\n", **kwargs))
