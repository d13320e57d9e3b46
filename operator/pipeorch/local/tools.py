"""Where the pinned third-party binaries are: built by `make tools`, or already on PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeorch.errors import ConfigError


def tools_dir() -> Path:
    root = os.environ.get("PIPEORCH_TOOLS_DIR") or Path.home() / ".cache" / "pipeorch-tools"
    return Path(root) / "bin" / "current"


def find(name: str) -> Path:
    """The binary ``name`` from the tools cache, else from PATH; a clear error otherwise."""
    cached = tools_dir() / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ConfigError(
        f"{name} not found in {tools_dir()} or on PATH: run `make tools` to build it from "
        "pinned Go modules (needs Go >= 1.26; the first build takes a few minutes)"
    )
