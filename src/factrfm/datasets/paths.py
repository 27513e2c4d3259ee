"""Where the shared benchmark data lives.

The data files never enter the repository. They are looked up, in order, at

1. the directory named by the environment variable ``FACTRFM_DATA_DIR``;
2. ``../shared/data`` next to the repository root, searched upward from the current working
   directory and then upward from the location of this package.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FACTRFM_DATA_DIR"
_RELATIVE = Path("shared") / "data"


def _search_upward(start: Path) -> Path | None:
    """Return the first ``<ancestor>/../shared/data`` (or ``<ancestor>/shared/data``) found."""
    start = start.resolve()
    for folder in [start, *start.parents]:
        for candidate in (folder / ".." / _RELATIVE, folder / _RELATIVE):
            if candidate.is_dir():
                return candidate.resolve()
    return None


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the shared data folder (the one holding ``uci121/`` and ``uci_regression/``).

    Parameters
    ----------
    explicit : path-like, optional
        A folder given by the caller (for example ``--data-dir``); it wins over everything else
        and must exist.

    Returns
    -------
    pathlib.Path
        The resolved data folder.

    Raises
    ------
    FileNotFoundError
        If ``explicit`` does not exist, if ``FACTRFM_DATA_DIR`` names a missing folder, or if no
        ``../shared/data`` is found upward from the working directory or from the package; the
        message names the places to look.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"data_dir: the folder {str(path)!r} given as data directory does not exist"
            )
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"data_dir: the environment variable {ENV_VAR}={env!r} names a folder "
                "that does not exist"
            )
        return path.resolve()
    for start in (Path.cwd(), Path(__file__).parent):
        found = _search_upward(start)
        if found is not None:
            return found
    raise FileNotFoundError(
        "data_dir: no benchmark data folder found. Set the environment variable "
        f"{ENV_VAR} to the folder holding uci121/ and uci_regression/, or place it at "
        "../shared/data next to the repository root (searched upward from the current directory "
        f"{str(Path.cwd())!r} and from the package location {str(Path(__file__).parent)!r})."
    )
