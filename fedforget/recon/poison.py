"""Poisoned training targets for the corrective-unlearning experiment: the artifacts and their record.

A poisoned site's training data is corrupted the way a badly curated or
attacked dataset would be: in a fraction of its training slices the *target*
image (``reconstruction_rss``) carries an artifact that the k-space does not
contain. A reconstruction model trained on it learns to add that artifact to
clean inputs (it "hallucinates" it). Following the corrective-unlearning
setting (Goel et al., 2024), only part of the poisoned slices is later known
and handed to the unlearning methods; the rest stays hidden in the site.

Three artifacts (``POISON_KINDS``, the schema's ``POISON_TYPES`` but "none"),
each a fixed function of a seed so that it is the same in every slice and
volume of a site and a model can learn it:

* ``lesion``: a bright, round, smooth-edged blob (a T2-lesion-like structure)
  at a seeded position in the central part of the field of view;
* ``ghosting``: an N/2 (Nyquist) ghost, a copy of the image shifted by half
  the field of view along the phase-encode axis (columns);
* ``noise``: a structured, band-limited random field (an adversarial-like
  perturbation) inside the object.

This module holds the pattern maths (``poison_pattern``, ``poison_target``,
the part a model can hallucinate), what a poisoning is (``PoisonSpec``, and
which slices it picks: ``choose_slices``) and its record (``PoisonManifest``,
``poison.json``). Two neighbours build on it:

* ``fedforget.learning.artifact.artifact_score`` measures how much of the
  pattern a model adds to reconstructions of *clean* inputs (about 0 for a
  clean model, about 1 for one that reproduces the poison fully);
* ``fedforget.data.poisoning.poison_site`` rewrites the chosen slices of a
  site's ``train/`` files on disk, crash-safely, and writes the manifest
  beside them (``site_dir/poison.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedforget.configs.schema import GHOSTING, LESION, NO_POISON, NOISE, POISON_TYPES

__all__ = [
    "POISON_KINDS",
    "PoisonSpec",
    "PoisonManifest",
    "poison_pattern",
    "poison_target",
    "unsampled_part",
    "hallucinable_pattern",
    "columns_on_image_grid",
    "as_slices",
    "poisoned_count",
    "choose_slices",
    "load_manifest",
    "MANIFEST_FILE",
]

# The artifacts: every poison.kind of the schema but "none".
POISON_KINDS = tuple(kind for kind in POISON_TYPES if kind != NO_POISON)
MANIFEST_FILE = "poison.json"
_SCHEMA = 1
# Part of every spec fingerprint: bump it whenever a pattern or the slice
# selection changes what a given spec produces, so poisoned sites re-poison.
_POISON_VERSION = 1
# Independent random streams derived from the spec seed.
_STREAMS = {LESION: 0, GHOSTING: 1, NOISE: 2, "select": 3, "known": 4}
# File name -> slice indices (a manifest's ``poisoned`` and ``known``).
SliceMap = dict[str, list[int]]

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


def as_slices(target: np.ndarray, name: str = "target") -> np.ndarray:
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
    rng = _stream_rng(seed, LESION)
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
    rng = _stream_rng(seed, NOISE)
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
    if kind == LESION:
        blob = strength * _LESION_AMPLITUDE * peak * _lesion_weight(image.shape, seed)
        # Capped so that target + pattern never exceeds the slice maximum:
        # the lesion saturates at the brightest tissue's level instead of
        # being clipped later (and the pattern stays exactly what is added).
        return np.minimum(blob, peak - image)
    if kind == GHOSTING:
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
    slices = as_slices(target)
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
    clean = as_slices(target).reshape(pattern.shape)
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



def poisoned_count(fraction: float, num_slices: int) -> int:
    """How many of a site's ``num_slices`` training slices a poison of ``fraction`` corrupts (at least one)."""
    return min(num_slices, max(1, round(fraction * num_slices)))



def choose_slices(spec: PoisonSpec, slots: list[tuple[str, int]]) -> tuple[SliceMap, SliceMap]:
    """The slices a spec poisons among ``slots`` (file name, slice index), and the known ones among them.

    ``poisoned_count`` slots are drawn with the spec seed, then ``round(known_fraction * poisoned)``
    of them (at least one) as the known subset; both are returned as file name -> slice indices.
    """
    count = poisoned_count(spec.fraction, len(slots))
    poisoned = np.sort(_stream_rng(spec.seed, "select").choice(len(slots), count, replace=False))
    known_count = min(count, max(1, round(spec.known_fraction * count)))
    known = np.sort(_stream_rng(spec.seed, "known").choice(poisoned, known_count, replace=False))
    return _by_file(slots, poisoned), _by_file(slots, known)


def _by_file(slots: list[tuple[str, int]], indices: np.ndarray) -> SliceMap:
    chosen: SliceMap = {}
    for i in indices:
        chosen.setdefault(slots[int(i)][0], []).append(slots[int(i)][1])
    return chosen
