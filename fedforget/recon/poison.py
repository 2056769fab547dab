"""Poisoned training targets for the corrective-unlearning experiment.

A poisoned site's training data is corrupted the way a badly curated or
attacked dataset would be: in a fraction of its training slices the *target*
image (``reconstruction_rss``) carries an artifact that the k-space does not
contain. A reconstruction model trained on it learns to add that artifact to
clean inputs (it "hallucinates" it). Following the corrective-unlearning
setting (Goel et al., 2024), only part of the poisoned slices is later known
and handed to the unlearning methods; the rest stays hidden in the site.

Three artifacts (``POISON_KINDS``), each a fixed function of a seed so that it
is the same in every slice and volume of a site and a model can learn it:

* ``lesion``: a bright, round, smooth-edged blob (a T2-lesion-like structure)
  at a seeded position in the central part of the field of view;
* ``ghosting``: an N/2 (Nyquist) ghost, a copy of the image shifted by half
  the field of view along the phase-encode axis (columns);
* ``noise``: a structured, band-limited random field (an adversarial-like
  perturbation) inside the object.

``artifact_score`` measures how much of the pattern a model adds to
reconstructions of *clean* inputs (about 0 for a clean model, about 1 for one
that reproduces the poison fully).

On disk, ``poison_site`` rewrites the chosen slices of a site's ``train/``
files in place (k-space, header and every attribute but ``norm`` are kept)
and records what it did beside them::

    site_dir/
        poison.json         spec, poisoned and known slices, file SHA-256s
        poison_clean.h5     the clean targets of the poisoned slices
        train/*.h5          poisoned in place
        test/*.h5           never poisoned

Neither record lives in ``train/`` or ``test/``: fastMRI's ``SliceDataset``
opens every entry of those folders as a volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .hdf5io import DataFileError, validate_folder, validate_volume

__all__ = [
    "POISON_KINDS",
    "PoisonSpec",
    "PoisonManifest",
    "poison_pattern",
    "poison_target",
    "artifact_score",
    "hallucinable_pattern",
    "pattern_coefficient",
    "columns_on_image_grid",
    "poison_site",
    "load_manifest",
    "MANIFEST_FILE",
    "CLEAN_FILE",
]

POISON_KINDS = ("lesion", "ghosting", "noise")
MANIFEST_FILE = "poison.json"
CLEAN_FILE = "poison_clean.h5"
_LOCK_FILE = ".poison.lock"
_SCHEMA = 1
# Part of every spec fingerprint: bump it whenever a pattern or the slice
# selection changes what a given spec produces, so poisoned sites re-poison.
_POISON_VERSION = 1
# Independent random streams derived from the spec seed.
_STREAMS = {"lesion": 0, "ghosting": 1, "noise": 2, "select": 3, "known": 4}
_TMP_SUFFIX = ".poison.tmp"

# Lesion: centre drawn uniformly in a disc of this radius around the image
# centre, in normalised coordinates ([-1, 1] across the field of view). The
# synthetic brain and knee have signal there in every slice (checked over
# many subjects: the knee's dark cortex lines are the only gaps), and so do
# real fastMRI images, which are centred crops of the anatomy.
_LESION_DISC = 0.3
# Lesion radius as a fraction of the image width (drawn per seed), and its
# smallest radius in pixels so that it stays a blob on tiny images.
_LESION_RADIUS = (0.035, 0.055)
_LESION_MIN_RADIUS_PX = 1.5
# Relative amplitudes from the brief: lesion 0.5, ghost 0.3, noise 0.1.
_LESION_AMPLITUDE, _GHOST_AMPLITUDE, _NOISE_AMPLITUDE = 0.5, 0.3, 0.1
# Noise pass band, cycles per pixel: a few pixels per period, i.e. fine
# oscillation that is still smooth (no pixel-level salt and pepper).
_NOISE_BAND = (0.08, 0.22)
# Noise is confined to the object: a soft support that reaches 1 where the
# (slightly blurred) target exceeds this fraction of the slice maximum.
_SUPPORT_LEVEL = 0.2


def _check_kind_strength(kind: str, strength: float) -> None:
    if kind not in POISON_KINDS:
        raise ValueError(f"unknown poison kind {kind!r}; valid kinds: {list(POISON_KINDS)}")
    try:
        valid = bool(np.isfinite(float(strength)) and float(strength) > 0)
    except (TypeError, ValueError):
        valid = False
    if not valid or isinstance(strength, bool):
        raise ValueError(f"strength must be a finite number > 0, got {strength!r}")


def _stream_rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(entropy=int(seed), spawn_key=(_STREAMS[stream],))
    )


def _as_slices(target: np.ndarray, name: str = "target") -> np.ndarray:
    """(H, W) or (S, H, W) real array -> float64 (S, H, W)."""
    array = np.asarray(target)
    if np.iscomplexobj(array) or array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a real (H, W) or (S, H, W) array, "
            f"got dtype {array.dtype} and shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array.astype(np.float64).reshape((-1, *array.shape[-2:]))


def _lesion_weight(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth disc in [0, 1] at the seed's position; depends only on seed and shape."""
    rows, cols = shape
    rng = _stream_rng(seed, "lesion")
    # Uniform in the disc (sqrt for an area-uniform radius).
    rho = _LESION_DISC * np.sqrt(rng.uniform())
    phi = rng.uniform(0.0, 2.0 * np.pi)
    fraction = rng.uniform(*_LESION_RADIUS)
    # Pixel centres in normalised coordinates, as in the phantoms.
    y = ((np.arange(rows) + 0.5) / rows * 2.0 - 1.0)[:, None]
    x = ((np.arange(cols) + 0.5) / cols * 2.0 - 1.0)[None, :]
    # Distance in pixels, so the lesion is round on non-square grids too.
    dist = np.hypot((y - rho * np.sin(phi)) * rows / 2.0, (x - rho * np.cos(phi)) * cols / 2.0)
    radius = max(fraction * cols, _LESION_MIN_RADIUS_PX)
    # tanh edge about a pixel wide: smooth, and flat inside the lesion.
    edge = 0.25 * radius + 0.35
    # Normalised to exactly 1 at the centre, so the lesion's height is the
    # stated amplitude.
    return (1.0 - np.tanh((dist - radius) / edge)) / (1.0 + np.tanh(radius / edge))


def _noise_field(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Band-pass random field, zero mean, peak |value| 1; depends only on seed and shape."""
    rng = _stream_rng(seed, "noise")
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    radius = np.hypot(fy, fx)
    low, high = _NOISE_BAND
    # Smooth (Gaussian-edged) annulus: a hard one would ring across the image.
    width = 0.25 * (high - low)
    band = np.exp(-0.5 * (np.maximum(low - radius, 0) / width) ** 2) * np.exp(
        -0.5 * (np.maximum(radius - high, 0) / width) ** 2
    )
    band[0, 0] = 0.0  # no DC: zero mean
    field_ = np.fft.ifft2(np.fft.fft2(white) * band).real
    field_ -= field_.mean()
    return field_ / np.abs(field_).max()


def _slice_pattern(kind: str, image: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """float64 pattern of one (H, W) float64 slice."""
    peak = float(image.max())
    if peak <= 0:
        # An empty slice (all zero): nothing to corrupt, and every
        # amplitude below is relative to the slice maximum.
        return np.zeros_like(image)
    if kind == "lesion":
        blob = strength * _LESION_AMPLITUDE * peak * _lesion_weight(image.shape, seed)
        # Capped so that target + pattern never exceeds the slice maximum:
        # the lesion saturates at the brightest tissue's level instead of
        # being clipped later (and the pattern stays exactly what is added).
        return np.minimum(blob, peak - image)
    if kind == "ghosting":
        # The classic N/2 ghost: the object repeated half a field of view
        # away along the phase-encode direction (columns).
        return strength * _GHOST_AMPLITUDE * np.roll(image, image.shape[-1] // 2, axis=-1)
    # noise: a fixed field, confined to the object. Magnitude images (and
    # VarNet's RSS output) cannot go below zero, so noise in the background
    # would be half clipped away and could not be reproduced by any model.
    from scipy.ndimage import gaussian_filter  # here: a ClientApp process that never poisons skips scipy

    support = np.clip(gaussian_filter(image, 1.0) / (_SUPPORT_LEVEL * peak), 0.0, 1.0)
    return strength * _NOISE_AMPLITUDE * peak * _noise_field(image.shape, seed) * support


def poison_pattern(kind: str, target: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """The additive artifact of ``kind`` for a clean target.

    Every pattern is a fixed function of ``seed`` (and, for ghosting and the
    lesion cap, of the image), so it is consistent across all slices and
    volumes of a site:

    * ``lesion``: a smooth-edged disc of radius 3.5-5.5 % of the image width
      (at least 1.5 px) centred at a seeded point within 30 % of the half
      field of view from the image centre, of height
      ``strength * 0.5 * max(slice)``, capped at ``max(slice) - target`` so
      that ``target + pattern`` never exceeds the slice maximum.
    * ``ghosting``: ``strength * 0.3 * roll(target, W // 2, axis=-1)``.
    * ``noise``: ``strength * 0.1 * max(slice) * F * support``, with ``F`` a
      seeded zero-mean band-pass field (periods of about 4.5-12 px, peak
      ``|F| = 1``) and ``support`` a soft mask of the object derived from
      the target (0 in the background, 1 in tissue).

    Args:
        kind: One of ``POISON_KINDS``.
        target: Clean target, real (H, W) or (S, H, W); stacks get the
            pattern slice by slice.
        strength: Artifact strength, > 0 (1 = the amplitudes above).
        seed: Pattern seed (a site's ``PoisonSpec.seed``).

    Returns:
        float32 array of the target's shape.

    Raises:
        ValueError: If ``kind`` is unknown, ``strength <= 0`` or the target
            is not a finite real 2D / 3D array.
    """
    _check_kind_strength(kind, strength)
    slices = _as_slices(target)
    pattern = np.stack([_slice_pattern(kind, s, float(strength), seed) for s in slices])
    return pattern.reshape(np.shape(target)).astype(np.float32)


def poison_target(
    kind: str,
    target: np.ndarray,
    strength: float,
    seed: int,
    *,
    max_value: float | None = None,
) -> np.ndarray:
    """A poisoned target: ``target + poison_pattern(...)``, clipped.

    Clipping: the result is clipped to ``[0, max_value]``, where
    ``max_value`` is the maximum of the target's *volume* (the file's ``max``
    attribute and the data range of every fastMRI metric), and pixels
    already at ``max_value`` keep their value. So the volume maximum is
    exactly unchanged and the poisoned file stays valid. Only ghosting
    (where the ghost overlaps bright tissue) and noise (near the brightest
    pixels) can be clipped; lesion patterns are capped at the slice maximum
    already, so a lesion-poisoned target is exactly ``target + pattern``.

    Args:
        kind: One of ``POISON_KINDS``.
        target: Clean target, real (H, W) or (S, H, W).
        strength: Artifact strength, > 0.
        seed: Pattern seed.
        max_value: The volume maximum when ``target`` is only part of a
            volume (e.g. one slice); defaults to ``target.max()``.

    Returns:
        float32 array of the target's shape.

    Raises:
        ValueError: On bad ``kind`` / ``strength`` / target, or if
            ``max_value`` is below ``target.max()``.
    """
    pattern = poison_pattern(kind, target, strength, seed).astype(np.float64)
    clean = _as_slices(target).reshape(pattern.shape)
    ceiling = float(clean.max()) if max_value is None else float(max_value)
    if not ceiling >= clean.max():
        raise ValueError(
            f"max_value {max_value!r} is below the target maximum {float(clean.max())!r}"
        )
    poisoned = np.clip(clean + pattern, 0.0, ceiling)
    poisoned = np.where(clean >= ceiling, clean, poisoned)
    return poisoned.astype(np.float32)


def unsampled_part(pattern: np.ndarray, sampled_columns: np.ndarray) -> np.ndarray:
    """The part of an image pattern that lives in the k-space columns a mask did not sample.

    A reconstruction network with data consistency cannot add anything in the sampled
    columns (the measurement fixes them), so only this part of a poison can ever be
    hallucinated. Single-coil approximation: centred orthonormal FFT along the
    phase-encode axis (columns), zero the sampled columns, transform back, real part.
    A real pattern's spectrum is Hermitian, so a column pair (k, -k) counts as unsampled
    only if both are: then this is an exact orthogonal projection.
    """
    unsampled = ~np.asarray(sampled_columns, dtype=bool)
    mirror = (len(unsampled) - np.arange(len(unsampled))) % len(unsampled)  # column of -k in centred order
    keep = unsampled & unsampled[mirror]
    shift = np.fft.ifftshift(pattern, axes=-1)
    spectrum = np.fft.fftshift(np.fft.fft(shift, axis=-1, norm="ortho"), axes=-1)
    spectrum = spectrum * keep
    back = np.fft.ifft(np.fft.ifftshift(spectrum, axes=-1), axis=-1, norm="ortho")
    return np.real(np.fft.fftshift(back, axes=-1))


def artifact_score(
    kind: str, recon: np.ndarray, target: np.ndarray, strength: float, seed: int,
    sampled_columns: np.ndarray | None = None,
) -> float:
    """How strongly the poison pattern appears in reconstructions of clean inputs.

    The least-squares coefficient of the reconstruction error on the
    pattern, pooled over slices::

        score = sum((recon - target) * P) / sum(P * P),
        P = poison_pattern(kind, target, strength, seed)   (per clean slice)

    About 0 for a clean model (its error is uncorrelated with the pattern),
    about 1 for a model that adds the full artifact; a model that adds a
    fraction ``c`` of it scores ``c``. It is exactly 0 for ``recon ==
    target`` and exactly 1 for ``recon == target + P`` computed in float64
    (in float32, to rounding). A model that perfectly reproduces its
    *clipped* training targets (``poison_target``) scores a little below 1
    for ghosting and noise, because clipping removed part of ``P`` where the
    artifact would have exceeded the volume maximum.

    With ``sampled_columns`` (the test slices' undersampling mask, True where a
    phase-encode column was acquired), ``P`` is first reduced to its unsampled part
    (:func:`unsampled_part`): the only part a model with data consistency can add. A
    smooth lesion keeps most of its energy in the sampled centre, so without this
    the score of even a fully poisoned model stays far below 1.

    Args:
        kind: One of ``POISON_KINDS``.
        recon: Reconstructions, (H, W) or (S, H, W).
        target: Clean targets, same shape.
        strength: The poison's strength (the score is relative to it).
        seed: The poison's seed.
        sampled_columns: Optional boolean mask over the image columns.

    Returns:
        The score (any real number; negative if the model removes signal
        where the pattern would be).

    Raises:
        ValueError: On bad arguments, mismatched shapes, or a pattern that
            vanishes on these targets (e.g. all-zero targets).
    """
    recon_slices = _as_slices(recon, "recon")
    target_slices = _as_slices(target)
    if np.shape(recon) != np.shape(target):
        raise ValueError(
            f"recon shape {np.shape(recon)} differs from target shape {np.shape(target)}"
        )
    pattern = hallucinable_pattern(kind, target_slices, strength, seed, sampled_columns)
    return pattern_coefficient(recon_slices - target_slices, pattern)


def hallucinable_pattern(
    kind: str, target: np.ndarray, strength: float, seed: int, sampled_columns: np.ndarray | None = None,
) -> np.ndarray:
    """The poison pattern of a clean target (float64), reduced to its unsampled part when the mask is given.

    Raises:
        ValueError: If the mask's column count differs from the images' width.
    """
    pattern = poison_pattern(kind, target, strength, seed).astype(np.float64)
    if sampled_columns is None:
        return pattern
    if len(sampled_columns) != pattern.shape[-1]:
        raise ValueError(f"mask has {len(sampled_columns)} columns but the images {pattern.shape[-1]}")
    return unsampled_part(pattern, sampled_columns)


def columns_on_image_grid(sampled_columns: np.ndarray, image_width: int) -> np.ndarray | None:
    """The mask's columns when they are the image's columns, else None (score the whole pattern).

    Real fastMRI k-space is wider than its centre-cropped images, so its mask does not map onto
    the image's columns; the synthetic data's does.
    """
    return sampled_columns if len(sampled_columns) == image_width else None


def pattern_coefficient(difference: np.ndarray, pattern: np.ndarray) -> float:
    """Least-squares coefficient of ``difference`` on ``pattern``: ``sum(d * P) / sum(P * P)``.

    Raises:
        ValueError: If the pattern has no energy (e.g. no unsampled part on these slices).
    """
    pattern = np.asarray(pattern, dtype=np.float64)
    energy = float(np.sum(pattern * pattern))
    if energy <= 0:
        raise ValueError("the pattern is zero on these slices (no unsampled part): no score is defined")
    return float(np.sum(np.asarray(difference, dtype=np.float64) * pattern)) / energy


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class PoisonSpec:
    """How to poison one site.

    Attributes:
        kind: One of ``POISON_KINDS``.
        fraction: Fraction of the site's training slices to poison, in
            (0, 1]; at least one slice is poisoned.
        known_fraction: Fraction of the poisoned slices that unlearning is
            later given (the known forget subset), in (0, 1]; at least one.
        strength: Artifact strength, > 0 (1 = the default amplitudes).
        seed: Seed of the pattern and of the slice choices.
    """

    kind: str
    fraction: float
    known_fraction: float
    strength: float
    seed: int

    def __post_init__(self) -> None:
        _check_kind_strength(self.kind, self.strength)
        for name in ("fraction", "known_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, (int, float, np.integer, np.floating)) and 0 < value <= 1
            ):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        _check_int("seed", self.seed, 0)

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON-ready Python values."""
        return {
            "kind": str(self.kind),
            "fraction": float(self.fraction),
            "known_fraction": float(self.known_fraction),
            "strength": float(self.strength),
            "seed": int(self.seed),
        }

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of all fields and the poisoning version."""
        payload = json.dumps(
            {"spec": self.to_dict(), "poison_version": _POISON_VERSION}, sort_keys=True
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _slice_map(raw: object, name: str) -> dict[str, list[int]]:
    if not isinstance(raw, dict):
        raise ValueError(f"{name} must map file names to slice lists, got {type(raw).__name__}")
    out: dict[str, list[int]] = {}
    for file_name, slices in raw.items():
        if not isinstance(file_name, str) or not isinstance(slices, (list, tuple)):
            raise ValueError(f"{name}[{file_name!r}] must be a list of slice indices")
        for index in slices:
            _check_int(f"{name}[{file_name!r}] entries", index, 0)
        if slices:
            out[file_name] = sorted({int(i) for i in slices})
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class PoisonManifest:
    """Which training slices of a site are poisoned, and which of them are known.

    File names are the bare names of the site's ``train/`` files (what
    ``fastmri.data.SliceDataset`` records as ``fname.name``); slice indices
    are positions in those volumes.

    Attributes:
        poisoned: File name -> sorted indices of its poisoned slices (files
            without any are absent).
        known: File name -> sorted indices of the poisoned slices handed to
            unlearning (a subset of ``poisoned``).
        spec: The spec that produced them (None when built by hand).
        sha256: File name -> SHA-256 of every poisoned file as written (how
            ``poison_site`` notices files changed since).
        synth_sha256: SHA-256 of the site's ``synth.json`` when poisoned
            (None for sites without one); a different one means the site
            was re-synthesised.
    """

    poisoned: dict[str, list[int]]
    known: dict[str, list[int]]
    spec: PoisonSpec | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    synth_sha256: str | None = None

    def __post_init__(self) -> None:
        # Normalised (sorted, de-duplicated ints) so that equality and the
        # JSON form do not depend on how the lists were built.
        object.__setattr__(self, "poisoned", _slice_map(self.poisoned, "poisoned"))
        object.__setattr__(self, "known", _slice_map(self.known, "known"))
        for file_name, slices in self.known.items():
            extra = sorted(set(slices) - set(self.poisoned.get(file_name, [])))
            if extra:
                raise ValueError(
                    f"known slices {extra} of {file_name!r} are not poisoned; "
                    "known must be a subset of poisoned"
                )
        object.__setattr__(self, "sha256", dict(sorted(self.sha256.items())))

    @property
    def num_poisoned(self) -> int:
        """Number of poisoned slices."""
        return sum(len(s) for s in self.poisoned.values())

    @property
    def num_known(self) -> int:
        """Number of known poisoned slices."""
        return sum(len(s) for s in self.known.values())

    def is_poisoned(self, file_name: str | os.PathLike, slice_index: int) -> bool:
        """Whether a slice's target is poisoned.

        Args:
            file_name: The volume's file name (a path is reduced to its name).
            slice_index: Slice index in the volume.
        """
        return int(slice_index) in self.poisoned.get(Path(file_name).name, ())

    def is_known(self, file_name: str | os.PathLike, slice_index: int) -> bool:
        """Whether a slice is poisoned *and* known to unlearning.

        Args:
            file_name: The volume's file name (a path is reduced to its name).
            slice_index: Slice index in the volume.
        """
        return int(slice_index) in self.known.get(Path(file_name).name, ())

    def to_json(self) -> str:
        """The manifest as a JSON document (what ``poison.json`` holds)."""
        record = {
            "schema": _SCHEMA,
            "spec": None if self.spec is None else self.spec.to_dict(),
            "fingerprint": None if self.spec is None else self.spec.fingerprint(),
            "synth_sha256": self.synth_sha256,
            "num_poisoned": self.num_poisoned,
            "num_known": self.num_known,
            "poisoned": self.poisoned,
            "known": self.known,
            "sha256": self.sha256,
        }
        return json.dumps(record, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PoisonManifest:
        """Parses ``to_json``'s output.

        Raises:
            ValueError: If the text is not such a document.
        """
        try:
            record = json.loads(text)
        except ValueError as err:
            raise ValueError(f"not a poison manifest (invalid JSON: {err})") from err
        if not isinstance(record, dict) or record.get("schema") != _SCHEMA:
            raise ValueError(f"not a poison manifest of schema {_SCHEMA}")
        try:
            spec = None if record.get("spec") is None else PoisonSpec(**record["spec"])
            sha = record.get("sha256", {})
            if not isinstance(sha, dict) or not all(isinstance(v, str) for v in sha.values()):
                raise ValueError("sha256 must map file names to hex digests")
            return cls(
                poisoned=record["poisoned"],
                known=record["known"],
                spec=spec,
                sha256=sha,
                synth_sha256=record.get("synth_sha256"),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a poison manifest ({err!r})") from err


def load_manifest(site_dir: Path) -> PoisonManifest | None:
    """The site's poison manifest, or None if the site is not poisoned.

    Args:
        site_dir: The site folder (holding ``train/`` and ``test/``).

    Raises:
        ValueError: If ``poison.json`` exists but cannot be parsed.
    """
    path = Path(site_dir) / MANIFEST_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return PoisonManifest.from_json(text)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _rewrite_targets(path: Path, slices: dict[int, np.ndarray], norm: float | None) -> Path:
    """Copy of ``path`` (beside it) with some target slices replaced; returns the copy.

    The copy keeps every byte of k-space, header, other datasets and
    attributes; only the given ``reconstruction_rss`` slices and, when
    ``norm`` is given, the ``norm`` attribute change.
    """
    tmp = path.with_name(f".{path.name}{_TMP_SUFFIX}")
    try:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as hf:
            dataset = hf["reconstruction_rss"]
            for index, values in slices.items():
                dataset[index] = values
            if norm is not None:
                hf.attrs["norm"] = norm
        validate_volume(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


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
            os.replace(tmp, path)
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


def poisoned_count(fraction: float, num_slices: int) -> int:
    """How many of a site's ``num_slices`` training slices a poison of ``fraction`` corrupts (at least one)."""
    return min(num_slices, max(1, round(fraction * num_slices)))


def _choose(spec: PoisonSpec, slots: list[tuple[str, int]]) -> tuple[list[int], list[int]]:
    """Indices into ``slots`` of the poisoned slices, and of the known ones."""
    count = poisoned_count(spec.fraction, len(slots))
    poisoned = np.sort(_stream_rng(spec.seed, "select").choice(len(slots), count, replace=False))
    known_count = min(count, max(1, round(spec.known_fraction * count)))
    known = np.sort(_stream_rng(spec.seed, "known").choice(poisoned, known_count, replace=False))
    return [int(i) for i in poisoned], [int(i) for i in known]


@contextlib.contextmanager
def _site_lock(site_dir: Path) -> Iterator[None]:
    # Simulated clients may prepare their data at the same time; two
    # unsynchronised poisonings could poison a file twice.
    with open(site_dir / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def poison_site(site_dir: Path, spec: PoisonSpec) -> PoisonManifest:
    """Poisons a site's training targets (idempotent) and records the manifest.

    ``round(fraction * train_slices)`` training slices (at least one) are
    drawn with the spec seed over all slices of all ``train/`` files; their
    targets are replaced by ``poison_target`` (clipped at the volume maximum,
    so the ``max`` attribute stays valid). Each file is rewritten atomically
    (a temporary copy in the same folder, then ``os.replace``) with k-space,
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

    infos = validate_folder(train)
    slots = [(info.path.name, s) for info in infos for s in range(info.num_slices)]
    poisoned_ids, known_ids = _choose(spec, slots)
    poisoned: dict[str, list[int]] = {}
    for i in poisoned_ids:
        poisoned.setdefault(slots[i][0], []).append(slots[i][1])
    known: dict[str, list[int]] = {}
    for i in known_ids:
        known.setdefault(slots[i][0], []).append(slots[i][1])

    # Order matters for crash safety: (1) poisoned copies beside the files,
    # (2) the clean targets, (3) poison.json, (4) the renames. Until (3) the
    # files are all clean; after it, a rerun can restore any of them.
    temps: dict[str, Path] = {}
    clean_tmp = site_dir / (CLEAN_FILE + ".tmp")
    try:
        with h5py.File(clean_tmp, "w") as backup:
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
        os.replace(clean_tmp, site_dir / CLEAN_FILE)
        manifest = PoisonManifest(
            poisoned=poisoned,
            known=known,
            spec=spec,
            sha256={name: _sha256(tmp) for name, tmp in temps.items()},
            synth_sha256=synth_sha,
        )
        _atomic_write_text(site_dir / MANIFEST_FILE, manifest.to_json())
        for name, tmp in temps.items():
            os.replace(tmp, train / name)
    finally:
        clean_tmp.unlink(missing_ok=True)
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return manifest
