"""When a finished run may be reused: its identity (config, package version, source fingerprint)
and moving a run that does not match aside. Used by `make demo` and the accuracy benchmark.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time


def run_identity(config) -> dict:
    """What a finished run must match to be reused: its config, the installed package's version
    and a fingerprint of the package's source (lmr_jax/ and tfds_builders/ .py files)."""
    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("lmr_jax", "tfds_builders"):
        for folder, dirs, files in sorted(os.walk(os.path.join(root, package))):
            dirs.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    try:
        version = importlib.metadata.version("lmr_jax")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return {"config": json.loads(config.to_json()), "version": version,
            "source": digest.hexdigest()}  # fmt: skip


def set_aside(workdir: str) -> str:
    """Renames `workdir` to `<workdir>.old-<time stamp>` (nothing is deleted); returns the name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, count = f"{workdir}.old-{stamp}", 1
    while os.path.exists(aside):  # two moves in one second
        count += 1
        aside = f"{workdir}.old-{stamp}-{count}"
    os.rename(workdir, aside)
    return aside
