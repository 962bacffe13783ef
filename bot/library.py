"""The shipped flow library: YAML files packaged under ``flows/library``.

Reading package files is I/O, so it lives in the shell; ``flows`` only parses
the text it is given.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _library_dir() -> Path:
    return Path(str(resources.files("flows"))) / "library"


def flow_sources() -> dict[str, str]:
    """Every shipped flow's YAML source by flow key (the file's stem)."""
    return {p.stem: p.read_text("utf-8") for p in sorted(_library_dir().glob("*.yaml"))}


def protocol_sources() -> dict[str, str]:
    """Every shipped protocol's YAML source by protocol key (the file's stem)."""
    d = _library_dir() / "protocols"
    return {p.stem: p.read_text("utf-8") for p in sorted(d.glob("*.yaml"))}
