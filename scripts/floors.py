"""Print pip constraints that pin dependencies to the floors pyproject.toml declares.

    .venv/bin/python scripts/floors.py build    # [build-system] requires
    .venv/bin/python scripts/floors.py test     # [project] dependencies and the `test` extra

Each ``name>=X`` becomes ``name==X`` (with its environment marker); an exact ``==`` pin stays as
it is. A requirement without a ``>=`` floor is an error (exit status 2): every dependency keeps a
minimum that ``scripts/test-floors`` installs and tests.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def floor(text: str) -> str:
    """``name==floor`` for one requirement; ValueError if it declares no floor."""
    requirement = Requirement(text)
    versions = [spec.version for spec in requirement.specifier if spec.operator in (">=", "==")]
    if len(versions) != 1:
        raise ValueError(f"{text!r}: declare one floor (name>=X) or one pin (name==X)")
    marker = f"; {requirement.marker}" if requirement.marker else ""
    return f"{requirement.name}=={versions[0]}{marker}"


def requirements(section: str) -> list[str]:
    document = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    if section == "build":
        build: list[str] = document["build-system"]["requires"]
        return build
    project = document["project"]
    runtime: list[str] = project["dependencies"]
    return [*runtime, *project["optional-dependencies"][section]]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        pins = [floor(text) for text in requirements(argv[0])]
    except (KeyError, ValueError) as exc:
        print(f"scripts/floors.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
