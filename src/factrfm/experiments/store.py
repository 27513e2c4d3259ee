"""Results on disk for resumable experiments: one JSON file per finished run, written atomically.

A run is identified by its file name and its configuration. ``load_run`` returns a finished run
so that it is not computed again, and refuses (with a message naming the file) to mix a stored run
with a different configuration, so a changed option never silently reuses old numbers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def _clean(obj: Any) -> Any:
    """Convert numpy scalars/arrays to Python values and non-finite floats to None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and a rename (never half-written).

    Parameters
    ----------
    path : str or Path
    obj : JSON-serialisable data (numpy values are converted; NaN/inf become null)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(_clean(obj), fh, indent=1)
    os.replace(tmp, path)


def load_run(path: str | Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Return the stored run at ``path`` if it exists, else None.

    Parameters
    ----------
    path : str or Path
        JSON file written by ``write_json_atomic`` holding a dict with a "config" entry.
    config : dict
        The configuration the caller is about to run.

    Raises
    ------
    ValueError
        If the stored configuration differs from ``config`` (use another --out directory).
    """
    path = Path(path)
    if not path.exists():
        return None
    with open(path) as fh:
        stored = json.load(fh)
    if stored.get("config") != _clean(config):
        raise ValueError(
            f"{path} holds a run with a different configuration "
            f"({stored.get('config')} != {_clean(config)}); use another --out directory or "
            "delete the file"
        )
    return stored


def add_run_arguments(parser, *, out: str, quick_help: str) -> None:
    """The options every resumable experiment shares: ``--device``, ``--quick``, ``--out``,
    ``--no-plots`` and ``--quiet``."""
    parser.add_argument("--device", default="cpu", help="torch device for the RFM (cpu, cuda)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")
    parser.add_argument("--no-plots", action="store_true", help="write the numbers only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
