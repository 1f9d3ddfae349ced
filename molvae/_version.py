"""Versions from the installed package metadata, in a module that imports no other molvae
module (so any module may import it). Module ``__version__`` attributes can be stale (selfies
2.2.0 reports 2.1.1), the metadata is what pip installed."""

from __future__ import annotations

from importlib import metadata

_FALLBACK = "0.1.0"  # a source tree that was never pip-installed


def package_version(name: str) -> str:
    """The installed distribution's version, or ``"unknown"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return _FALLBACK if name == "molvae" else "unknown"


__version__ = package_version("molvae")
