"""Every file the packages read at run time (templates, the console's stylesheet, py.typed) is
named by pyproject.toml's package-data, so an installed sheepdog has it, not only a checkout."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_data_file_of_the_packages_ships() -> None:
    document = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns: list[str] = document["tool"]["setuptools"]["package-data"]["*"]
    packages = document["tool"]["setuptools"]["packages"]["find"]["include"]
    data = [
        path
        for pattern in packages
        for package in ROOT.glob(pattern.rstrip("*"))
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    ]
    assert any(path.name == "console.css" for path in data)  # the check sees what it checks
    left_out = [str(path.relative_to(ROOT)) for path in data if not _shipped(path, patterns)]
    assert left_out == [], f"not in [tool.setuptools.package-data]: {left_out}"


def _shipped(path: Path, patterns: list[str]) -> bool:
    """Whether setuptools ships ``path``: a pattern matches it below the package holding it
    (the nearest directory with an __init__.py), ``*`` within one directory."""
    package = path.parent
    while not (package / "__init__.py").exists():
        package = package.parent
    tail = path.relative_to(package).parts
    return any(
        len(parts) == len(tail) and all(map(fnmatch, tail, parts))
        for parts in (pattern.split("/") for pattern in patterns)
    )
