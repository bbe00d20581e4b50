"""Where a result came from: package version and source revision, recorded by runs and reports."""

from __future__ import annotations

import subprocess
from pathlib import Path

from refcut import __version__


def package_version() -> str:
    """The refcut version of the running code."""
    return __version__


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the source tree, or None outside a git checkout."""
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None
