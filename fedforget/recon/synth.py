"""Synthetic fastMRI-format sites: phantoms -> coils -> noisy k-space -> HDF5.

A site is a folder laid out like a fastMRI split::

    site_dir/
        synth.json          the spec, its fingerprint and the file list
        train/<anatomy>_<seed>_train_<index:03d>.h5
        test/<anatomy>_<seed>_test_<index:03d>.h5

Every volume is a different synthetic subject (anatomy, coil placement and
noise all drawn from seeds derived from the spec seed, the split and the
index), so train and test subjects are disjoint. Each volume is imaged in
one contrast: the spec's ``contrasts`` are dealt round-robin by volume index
(both splits start at the first entry), and the file's ``acquisition``
attribute names it, as in fastMRI. Sites are built in a temporary folder
beside ``site_dir`` and renamed into place, so a crash never leaves a
half-written site that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .acquisition import acquire
from .atomic import swap_dir
from .coils import coil_sensitivities
from .hdf5io import write_multicoil_volume
from .phantoms import PHANTOMS, check_contrast

__all__ = [
    "SynthSpec",
    "write_synthetic_site",
    "ensure_synthetic_site",
    "SPLITS",
    "DEFAULT_CONTRASTS",
]

SPLITS = ("train", "test")
_SPEC_FILE = "synth.json"
# Part of every fingerprint: bump it whenever the phantoms, coils or
# acquisition change what a given spec produces, so cached sites rebuild.
_GENERATOR_VERSION = 3
# Contrast mix of each anatomy when a spec names none, dealt round-robin.
# Brain: roughly fastMRI's brain set (about half T2, a quarter T1 post-
# contrast, the rest FLAIR and T1), interleaved so that small sites see
# several contrasts. Knee: fastMRI's knee set is about half PD, half PDFS.
DEFAULT_CONTRASTS: dict[str, tuple[str, ...]] = {
    "brain": (
        "AXT2",
        "AXT1POST",
        "AXT2",
        "AXFLAIR",
        "AXT2",
        "AXT1POST",
        "AXT2",
        "AXT1",
    ),
    "knee": ("CORPD_FBK", "CORPDFS_FBK"),
}
_STREAMS = {"anatomy": 0, "coils": 1, "noise": 2, "preparation": 3}


@dataclass(frozen=True)
class SynthSpec:
    """What to synthesise for one site.

    Attributes:
        anatomy: One of ``PHANTOMS`` ("brain", "knee").
        train_volumes: Number of training volumes (subjects), >= 1.
        test_volumes: Number of test volumes (subjects), >= 1.
        slices_per_volume: Slices in each volume, >= 1.
        size: Image side in pixels (k-space and target are size x size).
        coils: Number of receive coils, >= 1.
        noise_std: Per-component k-space noise std (see
            ``fedforget.recon.acquisition``), >= 0.
        seed: Site seed; sites with the same anatomy and seed hold the same
            subjects, so give every site its own seed.
        contrasts: Contrasts (``phantoms.CONTRASTS[anatomy]``; repeats
            weight the mix) dealt round-robin to each split's volumes by
            index. Empty (the default) means ``DEFAULT_CONTRASTS[anatomy]``;
            ``contrast_mix`` is the mix in effect.
        skull_stripped_share: Chance that a brain volume is skull-stripped
            (the brain alone on an empty background, as preprocessed research
            volumes are), drawn per volume; 0 for knees.
    """

    anatomy: str
    train_volumes: int
    test_volumes: int
    slices_per_volume: int
    size: int
    coils: int
    noise_std: float
    seed: int
    contrasts: tuple[str, ...] = ()
    skull_stripped_share: float = 0.0

    def __post_init__(self) -> None:
        if self.anatomy not in PHANTOMS:
            raise ValueError(
                f"unknown anatomy {self.anatomy!r}; valid anatomies: {sorted(PHANTOMS)}"
            )
        self._check_contrasts()
        for name in ("train_volumes", "test_volumes", "slices_per_volume", "coils"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < 1
            ):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.size, bool)
            or not isinstance(self.size, (int, np.integer))
            or self.size < 16
        ):
            raise ValueError(f"size must be an integer >= 16, got {self.size!r}")
        if not np.isfinite(self.noise_std) or self.noise_std < 0:
            raise ValueError(
                f"noise_std must be a finite number >= 0, got {self.noise_std!r}"
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, (int, np.integer))
            or self.seed < 0
        ):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        share = self.skull_stripped_share
        if isinstance(share, bool) or not 0.0 <= share <= 1.0:
            raise ValueError(f"skull_stripped_share must be in [0, 1], got {share!r}")
        if share and self.anatomy != "brain":
            raise ValueError(
                f"skull_stripped_share is for brain phantoms; a {self.anatomy} "
                f"site must have 0, got {share!r}"
            )

    def _check_contrasts(self) -> None:
        if isinstance(self.contrasts, (str, bytes)) or not isinstance(
            self.contrasts, Sequence
        ):
            raise ValueError(
                "contrasts must be a tuple of contrast names, got "
                f"{self.contrasts!r}"
            )
        for contrast in self.contrasts:
            try:
                check_contrast(self.anatomy, contrast)
            except ValueError as err:
                raise ValueError(f"contrasts: {err}") from None
        # A list would make the frozen spec unhashable.
        object.__setattr__(self, "contrasts", tuple(self.contrasts))

    @property
    def contrast_mix(self) -> tuple[str, ...]:
        """The contrasts dealt to the volumes (the default mix if none given)."""
        return self.contrasts or DEFAULT_CONTRASTS[self.anatomy]

    def contrast_of(self, split: str, index: int) -> str:
        """Contrast of one volume: ``contrast_mix[index % len(contrast_mix)]``.

        Raises:
            ValueError: For an unknown split or an index outside the split.
        """
        counts = {"train": self.train_volumes, "test": self.test_volumes}
        if split not in counts:
            raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
        if (
            isinstance(index, bool)
            or not isinstance(index, (int, np.integer))
            or not 0 <= index < counts[split]
        ):
            raise ValueError(
                f"{split} volume index must be in [0, {counts[split]}), got {index!r}"
            )
        mix = self.contrast_mix
        return mix[int(index) % len(mix)]

    def is_skull_stripped(self, split: str, index: int) -> bool:
        """Whether one volume is imaged skull-stripped (drawn with ``skull_stripped_share``)."""
        if not self.skull_stripped_share:
            return False
        draw = np.random.default_rng(self.volume_seed(split, index, "preparation"))
        return bool(draw.uniform() < self.skull_stripped_share)

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON-ready Python values (``contrasts``: the mix).

        ``skull_stripped_share`` appears only when it is not 0, so specs
        without skull-stripped volumes keep the fingerprints (and caches)
        they had before the option existed.
        """
        stripped = {"skull_stripped_share": float(self.skull_stripped_share)}
        return {
            "anatomy": str(self.anatomy),
            "train_volumes": int(self.train_volumes),
            "test_volumes": int(self.test_volumes),
            "slices_per_volume": int(self.slices_per_volume),
            "size": int(self.size),
            "coils": int(self.coils),
            "noise_std": float(self.noise_std),
            "seed": int(self.seed),
            "contrasts": list(self.contrast_mix),
            **(stripped if self.skull_stripped_share else {}),
        }

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of all fields and the generator version.

        The contrasts enter as the mix in effect, so a spec that spells out
        the default mix has the same fingerprint as one that leaves it out.
        """
        payload = json.dumps(
            {"spec": self.to_dict(), "generator_version": _GENERATOR_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def file_name(self, split: str, index: int) -> str:
        """File name of one volume, e.g. ``knee_3_train_007.h5``."""
        return f"{self.anatomy}_{self.seed}_{split}_{index:03d}.h5"

    def volume_seed(self, split: str, index: int, stream: str) -> int:
        """Seed of one random stream (anatomy, coils, noise) of one volume."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
        sequence = np.random.SeedSequence(
            entropy=int(self.seed),
            spawn_key=(SPLITS.index(split), int(index), _STREAMS[stream]),
        )
        return int(sequence.generate_state(1, dtype=np.uint64)[0])


def _file_list(spec: SynthSpec) -> dict[str, list[str]]:
    counts = {"train": spec.train_volumes, "test": spec.test_volumes}
    return {
        split: [spec.file_name(split, i) for i in range(counts[split])]
        for split in SPLITS
    }


def _stripped_files(spec: SynthSpec) -> dict[str, list[str]]:
    return {
        split: [n for i, n in enumerate(names) if spec.is_skull_stripped(split, i)]
        for split, names in _file_list(spec).items()
    }


def _write_volumes(root: Path, spec: SynthSpec) -> None:
    phantom = PHANTOMS[spec.anatomy]
    for split, names in _file_list(spec).items():
        (root / split).mkdir(parents=True)
        for index, name in enumerate(names):
            contrast = spec.contrast_of(split, index)
            preparation = (
                {"skull_stripped": True} if spec.is_skull_stripped(split, index) else {}
            )
            images = phantom(
                spec.slices_per_volume,
                spec.size,
                spec.volume_seed(split, index, "anatomy"),
                contrast=contrast,
                **preparation,
            )
            maps = coil_sensitivities(
                spec.coils,
                (spec.size, spec.size),
                spec.volume_seed(split, index, "coils"),
            )
            acq = acquire(
                images, maps, spec.noise_std, spec.volume_seed(split, index, "noise")
            )
            write_multicoil_volume(
                root / split / name,
                acq.kspace,
                acq.target,
                patient_id=f"{spec.anatomy}-{spec.seed}-{split}-{index:03d}",
                acquisition=contrast,
            )


def write_synthetic_site(site_dir: Path, spec: SynthSpec) -> None:
    """(Re)writes a synthetic site, replacing whatever was at ``site_dir``.

    Args:
        site_dir: The site folder (created, or replaced as a whole).
        spec: What to synthesise.
    """
    site_dir = Path(site_dir)
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(
        tempfile.mkdtemp(prefix=f".{site_dir.name}.build-", dir=site_dir.parent)
    )
    try:
        _write_volumes(build, spec)
        record = {
            "spec": spec.to_dict(),
            "fingerprint": spec.fingerprint(),
            "files": _file_list(spec),
        }
        if spec.skull_stripped_share:
            record["skull_stripped"] = _stripped_files(spec)
        (build / _SPEC_FILE).write_text(
            json.dumps(record, indent=2, sort_keys=True) + "\n"
        )
        swap_dir(build, site_dir)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


def is_current(site_dir: Path, spec: SynthSpec) -> bool:
    """Whether ``site_dir`` holds ``spec``'s site: its ``synth.json`` fingerprint and every file (nothing is read)."""
    try:
        record = json.loads((site_dir / _SPEC_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("fingerprint") != spec.fingerprint():
        return False
    return all(
        (site_dir / split / name).is_file()
        for split, names in _file_list(spec).items()
        for name in names
    )


def ensure_synthetic_site(site_dir: Path, spec: SynthSpec) -> bool:
    """Writes the site unless an identical one is already there.

    Args:
        site_dir: The site folder.
        spec: What it should hold.

    Returns:
        True if the site was (re)written, False if it was already current
        (``synth.json`` has the spec's fingerprint and every file exists).
    """
    site_dir = Path(site_dir)
    if is_current(site_dir, spec):
        return False
    write_synthetic_site(site_dir, spec)
    return True
