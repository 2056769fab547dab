"""Where a run writes when it does not say: the workspace that holds ``outputs/`` and ``data/``.

``fedforget run`` and ``flwr run .`` must agree on it, although under ``flwr run`` the app's
code is imported from the copy Flower unpacked under ``$FLWR_HOME`` and its processes start
in whatever folder the SuperLink was started from. The workspace is therefore found from the
installation, never from the working directory:

1. ``$FEDFORGET_HOME`` when set;
2. the source checkout fedforget was installed from with ``pip install -e .`` (``make setup``);
3. ``~/fedforget`` otherwise.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

HOME_VARIABLE = "FEDFORGET_HOME"
OUTPUTS = "outputs"
CACHE = ".cache"


def workspace_root() -> Path:
    """The folder that holds ``outputs/`` (runs, model cache) and the synthetic sites by default."""
    given = os.environ.get(HOME_VARIABLE, "").strip()
    if given:
        return Path(given).expanduser().resolve()
    return editable_checkout() or Path.home() / "fedforget"


def editable_checkout() -> Path | None:
    """The source folder of an editable install of fedforget (PEP 610 ``direct_url.json``), if any."""
    # Every installed copy's metadata, not the first found: a checkout's own fedforget.egg-info
    # (found first when Python starts in the checkout) carries no direct_url.json.
    raws = [dist.read_text("direct_url.json") for dist in metadata.distributions(name="fedforget")]
    raw = next((text for text in raws if text), None)
    if not raw:
        return None
    try:
        url = json.loads(raw)
    except ValueError:
        return None
    if not url.get("dir_info", {}).get("editable") or not str(url.get("url", "")).startswith("file://"):
        return None
    folder = Path(unquote(urlparse(url["url"]).path))
    return folder if (folder / "pyproject.toml").is_file() else None


def outputs_dir() -> Path:
    """``<workspace>/outputs``: run folders and multiruns."""
    return workspace_root() / OUTPUTS


def default_cache_dir() -> Path:
    """``<workspace>/outputs/.cache``: trained originals and oracles reused across runs."""
    return outputs_dir() / CACHE
