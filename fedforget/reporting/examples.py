"""``examples/``: the example reconstructions a run keeps for its pictures (part of the output contract).

``examples/index.json`` lists each site's file and the models in it, in order, and the notes on what
could not be drawn (a site whose data the server may not read, a model whose weights diverged);
``examples/<site>.npz`` holds ``ground_truth``, ``zero_filled``, ``sampled_columns`` and one array
``model_<i>`` per listed model (model names such as ``compose(a*0.5+b*0.5)`` are not safe array keys).
Every file is written atomically, the index last, so a reader never sees a half-written example.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedforget.configs.atomic import atomic_write_bytes, atomic_write_json
from fedforget.learning.examples import SiteExample

EXAMPLES_DIR = "examples"
INDEX = "index.json"
_FIXED = ("ground_truth", "zero_filled", "sampled_columns")


def examples_dir(run_dir: Path) -> Path:
    return Path(run_dir) / EXAMPLES_DIR


def read_index(run_dir: Path) -> dict[str, Any]:
    """The examples' index, or an empty one for a run folder that kept none."""
    path = examples_dir(run_dir) / INDEX
    if not path.is_file():
        return {"notes": [], "sites": {}}
    return json.loads(path.read_text())


def write_examples(run_dir: Path, examples: Mapping[str, SiteExample], notes: Sequence[str]) -> None:
    """Keep every site's example (replacing what the folder held) and the notes."""
    folder = examples_dir(run_dir)
    index: dict[str, Any] = {"notes": list(notes), "sites": {}}
    for site, example in examples.items():
        name = f"{site}.npz"
        atomic_write_bytes(folder / name, _npz(example))
        index["sites"][site] = {"file": name, "models": list(example.reconstructions)}
    atomic_write_json(folder / INDEX, index)


def add_models(run_dir: Path, reconstructions: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Add models' reconstructions (site -> model -> image) to the sites' kept examples."""
    index = read_index(run_dir)
    examples = read_examples(run_dir, index)
    for site, images in reconstructions.items():
        if site in examples:
            examples[site].reconstructions.update(images)
    write_examples(run_dir, examples, index["notes"])


def read_examples(run_dir: Path, index: Mapping[str, Any] | None = None) -> dict[str, SiteExample]:
    """Every site's kept example, in the index's order (``index``: the one already read)."""
    index = read_index(run_dir) if index is None else index
    return {site: _load(run_dir, entry) for site, entry in index["sites"].items()}


def read_example(run_dir: Path, site: str) -> SiteExample:
    """One site's kept example.

    Raises:
        KeyError: the run folder kept no example of ``site``.
    """
    return _load(run_dir, read_index(run_dir)["sites"][site])


def _load(run_dir: Path, entry: Mapping[str, Any]) -> SiteExample:
    with np.load(examples_dir(run_dir) / entry["file"]) as arrays:
        models = {name: arrays[f"model_{i}"] for i, name in enumerate(entry["models"])}
        return SiteExample(arrays["ground_truth"], arrays["zero_filled"], arrays["sampled_columns"], models)


def _npz(example: SiteExample) -> bytes:
    arrays = {key: getattr(example, key) for key in _FIXED}
    arrays.update({f"model_{i}": image for i, image in enumerate(example.reconstructions.values())})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
