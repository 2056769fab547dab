"""Poisoning a site's files on disk: a crash-safe, idempotent rewrite of its training targets.

``poison_site`` rewrites the slices a :class:`~fedforget.recon.poison.PoisonSpec` picks in a
site's ``train/`` files in place (k-space, header and every attribute but ``norm`` are kept)
and records what it did beside them::

    site_dir/
        poison.json         spec, poisoned and known slices, file SHA-256s (recon.poison.PoisonManifest)
        poison_clean.h5     the clean targets of the poisoned slices
        train/*.h5          poisoned in place
        test/*.h5           never poisoned

Neither record lives in ``train/`` or ``test/``: fastMRI's ``SliceDataset`` opens every entry
of those folders as a volume. What the artifacts are, which slices a spec picks and the
manifest's format are :mod:`fedforget.recon.poison`'s; this module is the transaction on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from fedforget.configs.atomic import atomic_write, atomic_write_text, commit, stage
from fedforget.data.locks import exclusive
from fedforget.recon.hdf5io import DataFileError, validate_folder, validate_volume
from fedforget.recon.poison import (
    MANIFEST_FILE,
    PoisonManifest,
    PoisonSpec,
    SliceMap,
    choose_slices,
    load_manifest,
    poison_target,
)

__all__ = ["poison_site", "CLEAN_FILE"]

CLEAN_FILE = "poison_clean.h5"
_LOCK_FILE = ".poison.lock"
# Temporary names: a poisoned copy beside its volume in train/ (swept after a crash: SliceDataset
# would open it), and the two records' beside them in the site folder.
_TMP_SUFFIX = ".poison.tmp"
_VOLUME_TEMP = ".{name}" + _TMP_SUFFIX
_RECORD_TEMP = "{name}.tmp"


def poison_site(site_dir: Path, spec: PoisonSpec) -> PoisonManifest:
    """Poisons a site's training targets (idempotent) and records the manifest.

    ``round(fraction * train_slices)`` training slices (at least one) are
    drawn with the spec seed over all slices of all ``train/`` files; their
    targets are replaced by ``poison_target`` (clipped at the volume maximum,
    so the ``max`` attribute stays valid). Each file is rewritten atomically
    (a temporary copy in the same folder, then a rename) with k-space,
    ``ismrmrd_header``, other datasets and every attribute kept, except
    ``norm``: it is recomputed from the poisoned volume, as fastMRI computes
    it from the stored targets, so that a stale ``norm`` does not betray
    which volumes are poisoned. Then ``round(known_fraction * poisoned)``
    of the poisoned slices (at least one) are drawn as the known subset.
    Test files are never touched.

    Calls on the same site are serialised by an exclusive ``flock`` on
    ``site_dir/.poison.lock``.

    Idempotence: if ``poison.json`` holds this spec, the site's
    ``synth.json`` is unchanged and every poisoned file still has its
    recorded SHA-256, nothing is done. If the site was poisoned with another
    spec, its clean targets (kept in ``poison_clean.h5``) are restored
    first. If ``synth.json`` changed (the site was re-synthesised), the
    training files are taken as clean and poisoned afresh.

    Args:
        site_dir: Site folder with ``train/`` (and usually ``test/`` and
            ``synth.json``).
        spec: How to poison it.

    Returns:
        The manifest, also written to ``site_dir/poison.json``.

    Raises:
        fedforget.recon.hdf5io.DataFileError: If ``train/`` is missing or
            holds anything but valid fastMRI volumes.
        RuntimeError: If an earlier poisoning cannot be undone (see above).
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise DataFileError(
            f"{site_dir}: site folder does not exist; expected a folder holding train/"
        )
    with _site_lock(site_dir):
        return _poison_site(site_dir, spec)


def _poison_site(site_dir: Path, spec: PoisonSpec) -> PoisonManifest:
    train = site_dir / "train"
    if train.is_dir():
        # Left by a crash; SliceDataset would choke on them.
        for stale in train.glob(f".*{_TMP_SUFFIX}"):
            stale.unlink()
    synth = site_dir / "synth.json"
    synth_sha = _sha256(synth) if synth.is_file() else None
    current = _current_poisoning(site_dir, spec, synth_sha)
    if current is not None:
        return current
    infos = validate_folder(train)
    poisoned, known = choose_slices(spec, [(info.path.name, s) for info in infos for s in range(info.num_slices)])
    return _write_poisoning(site_dir, spec, poisoned, known, synth_sha)


def _current_poisoning(site_dir: Path, spec: PoisonSpec, synth_sha: str | None) -> PoisonManifest | None:
    """The site's manifest if it already holds ``spec``'s poisoning; otherwise undo any other, and None.

    Another spec's poisoning is undone from its clean targets; a manifest of an earlier synthesis
    (the files are clean again) is only removed, with its clean targets.
    """
    train = site_dir / "train"
    record = load_manifest(site_dir)
    if record is not None and record.synth_sha256 == synth_sha:
        if (
            record.spec is not None
            and record.spec.fingerprint() == spec.fingerprint()
            and record.poisoned
            and all(
                (train / name).is_file() and _sha256(train / name) == record.sha256.get(name)
                for name in record.poisoned
            )
        ):
            return record
        _restore_clean(site_dir, record)
    elif record is not None:
        # Re-synthesised since: the files are clean, the old records stale.
        (site_dir / MANIFEST_FILE).unlink(missing_ok=True)
        (site_dir / CLEAN_FILE).unlink(missing_ok=True)
    return None


def _write_poisoning(site_dir: Path, spec: PoisonSpec, poisoned: SliceMap, known: SliceMap,
                     synth_sha: str | None) -> PoisonManifest:
    """Poisons the chosen slices of a clean site and records it.

    Order matters for crash safety: (1) poisoned copies beside the files,
    (2) the clean targets, (3) poison.json, (4) the renames. Until (3) the
    files are all clean; after it, a rerun can restore any of them.
    """
    train = site_dir / "train"
    temps: dict[str, Path] = {}
    try:
        atomic_write(site_dir / CLEAN_FILE, lambda backup: _stage_poisoned(backup, train, spec, poisoned, temps),
                     temp=_RECORD_TEMP)
        manifest = PoisonManifest(
            poisoned=poisoned,
            known=known,
            spec=spec,
            sha256={name: _sha256(tmp) for name, tmp in temps.items()},
            synth_sha256=synth_sha,
        )
        atomic_write_text(site_dir / MANIFEST_FILE, manifest.to_json(), temp=_RECORD_TEMP)
        for name, tmp in temps.items():
            commit(tmp, train / name)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return manifest


def _stage_poisoned(backup_path: Path, train: Path, spec: PoisonSpec, poisoned: SliceMap,
                    temps: dict[str, Path]) -> None:
    """Writes the clean targets of the ``poisoned`` slices to ``backup_path`` and, into ``temps``
    (file name -> copy, filled as they are made), a poisoned copy of each file beside it."""
    with h5py.File(backup_path, "w") as backup:
        for name, indices in poisoned.items():
            path = train / name
            with h5py.File(path, "r") as hf:
                volume = hf["reconstruction_rss"][()]
                norm = hf.attrs.get("norm")
            ceiling = float(volume.max())
            new = {
                i: poison_target(
                    spec.kind, volume[i], spec.strength, spec.seed, max_value=ceiling
                )
                for i in indices
            }
            poisoned_volume = volume.copy()
            for i, values in new.items():
                poisoned_volume[i] = values
            new_norm = None if norm is None else float(np.linalg.norm(poisoned_volume))
            temps[name] = _rewrite_targets(path, new, new_norm)
            group = backup.create_group(name)
            group.create_dataset("slices", data=np.asarray(indices, dtype=np.int64))
            group.create_dataset("targets", data=volume[indices])
            if norm is not None:
                group.attrs["norm"] = norm


def _rewrite_targets(path: Path, slices: dict[int, np.ndarray], norm: float | None) -> Path:
    """Copy of ``path`` (beside it) with some target slices replaced; returns the copy.

    The copy keeps every byte of k-space, header, other datasets and
    attributes; only the given ``reconstruction_rss`` slices and, when
    ``norm`` is given, the ``norm`` attribute change.
    """

    def write(tmp: Path) -> None:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as hf:
            dataset = hf["reconstruction_rss"]
            for index, values in slices.items():
                dataset[index] = values
            if norm is not None:
                hf.attrs["norm"] = norm
        validate_volume(tmp)

    return stage(path, write, temp=_VOLUME_TEMP)


def _restore_clean(site_dir: Path, record: PoisonManifest) -> None:
    """Puts the clean targets of an earlier poisoning back, then forgets it.

    Files still as poisoned (their recorded SHA-256) get their clean slices
    and ``norm`` back from ``poison_clean.h5``; files whose poisoned slices
    already equal the clean ones (a crash in the middle of an earlier run)
    are left alone. Only when every file is clean are ``poison.json`` and
    ``poison_clean.h5`` removed, so a crash here is repaired by running
    again.

    Raises:
        RuntimeError: If a file is neither as poisoned nor clean (changed by
            something else) or the clean targets are missing.
    """
    train = site_dir / "train"
    clean_path = site_dir / CLEAN_FILE
    if record.poisoned and not clean_path.is_file():
        raise RuntimeError(
            f"{site_dir}: poisoned by an earlier spec but {CLEAN_FILE} (its clean "
            "targets) is missing; re-synthesise the site"
        )
    for name, indices in record.poisoned.items():
        path = train / name
        with h5py.File(clean_path, "r") as backup:
            if name not in backup:
                raise RuntimeError(f"{clean_path}: no clean targets for {name}")
            clean = backup[name]["targets"][()]
            norm = backup[name].attrs.get("norm")
        if path.is_file() and _sha256(path) == record.sha256.get(name):
            tmp = _rewrite_targets(
                path, dict(zip(indices, clean)), None if norm is None else float(norm)
            )
            commit(tmp, path)
            continue
        with h5py.File(path, "r") as hf:
            current = hf["reconstruction_rss"][indices]
        if not np.array_equal(current, clean):
            raise RuntimeError(
                f"{path}: changed since it was poisoned (neither the poisoned nor the "
                "clean version); re-synthesise the site"
            )
    (site_dir / MANIFEST_FILE).unlink(missing_ok=True)
    clean_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _site_lock(site_dir: Path) -> Iterator[None]:
    # Simulated clients may prepare their data at the same time; two
    # unsynchronised poisonings could poison a file twice.
    with exclusive(site_dir / _LOCK_FILE):
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
