"""What a user sees of poolx before reading a line of it: metadata and files.

The installed metadata (``importlib.metadata``, what pip and PyPI show) must
declare the license the ``LICENSE`` file grants, the Python versions CI
supports, that the package is typed, and where to find the project; a built
wheel must carry every file of the package (``py.typed``, data files), not
only its modules.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import poolx

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


@pytest.fixture(scope="module")
def metadata():
    return importlib.metadata.metadata("poolx")


def test_version_is_the_packages(metadata):
    assert metadata["Version"] == poolx.__version__


def test_license_file_grants_the_declared_license(metadata):
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in (metadata.get_all("License-File") or [])
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_classifiers_name_every_supported_python_and_typing(metadata):
    classifiers = metadata.get_all("Classifier") or []
    versions = sorted(c.rsplit(" :: ", 1)[1] for c in classifiers
                      if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert versions == SUPPORTED
    assert metadata["Requires-Python"] == f">={SUPPORTED[0]}"
    assert "Typing :: Typed" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers


def test_project_urls(metadata):
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues", "Changelog"}, urls
    for label, url in urls.items():
        assert re.fullmatch(r"https://\S+", url), (label, url)
    assert urls["Changelog"].endswith("docs/changelog.rst")
    assert (ROOT / "docs" / "changelog.rst").is_file()


def test_wheel_carries_every_file_of_the_package(tmp_path):
    """A wheel built from the tree holds every file of poolx/, not only .py files."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("poolx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "poolx"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert "poolx/py.typed" in tracked
    missing = [path for path in tracked if path not in names]
    assert not missing, missing
    assert any(re.fullmatch(r"poolx-[^/]+\.dist-info/licenses/LICENSE", n) for n in names), names
