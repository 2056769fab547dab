"""Structured config schema: one dataclass per Hydra group, validated on instantiation.

Hydra checks keys and types when YAML is merged into these dataclasses; the
``__post_init__`` hooks check values (ranges, names) when the composed config is
turned into objects by :func:`fedforget.configs.compose.load_experiment`, so a bad
value fails before any data is read or any process is started.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List

# Names defined once (fedforget.configs.names), re-exported here: every module may import the schema.
from fedforget.configs.names import (  # noqa: F401 (re-exported)
    DATA_KINDS,
    EQUISPACED,
    EQUISPACED_FRACTION,
    FASTMRI,
    FEDERATED,
    FINAL,
    GHOSTING,
    IMAGES,
    KSPACE_SOURCES,
    LESION,
    MASK_TYPES,
    NO_POISON,
    NOISE,
    ORACLE,
    ORACLE_PHASE,
    ORIGINAL,
    POISON_TYPES,
    RANDOM,
    REFERENCE_MODELS,
    SYNTHETIC,
    TRAINING_PHASES,
    UNLEARN,
    ZERO_FILLED,
    final_phase,
    is_unlearn_phase,
    unlearn_phase,
)

ANATOMIES = ("brain", "knee")
# A site's role in a removal, and the unlearning party it plays.
FORGET, RETAIN = "forget", "retain"
RETAIN_ACCESS = ("sites", "server")
DEVICES = ("auto", "cpu", "cuda")
# The unlearning registry's names, in its order (fedforget.unlearning.REGISTRY must match; a test checks).
# Centralised methods carried into the federation: they start from the original and use the parties' data.
CENTRALISED_METHODS = ("ft", "ga", "ga_l1", "ga_l1_ft", "nl", "nl_ft", "ssd", "lfssd", "bad_teacher", "grad_surgery",
                       "pga", "activation_pruning", "soft_relabel", "boundary_relabel")
# Federated-native methods: they read the server's round history (federation.history) and run FedAvg-style rounds.
HISTORY_METHODS = ("federaser", "sifu", "fedrecover", "fukd", "puf", "retrain_budget", "rollback")
METHOD_NAMES = CENTRALISED_METHODS + HISTORY_METHODS
# The methods that read the round history, and how densely they need it: federation.history.every must
# divide the number (0: any history will do; federaser's is its interval, set in compose).
HISTORY_EVERY = {"federaser": 0, "sifu": 1, "fedrecover": 1, "fukd": 1, "rollback": 0}
# Names that stand for several methods in unlearning.methods.
METHOD_GROUPS = {"all": METHOD_NAMES, "centralised": CENTRALISED_METHODS, "history": HISTORY_METHODS}
HISTORY_DTYPES = ("fp32", "fp16")


# Marks a field that holds a file system path: `fedforget run` makes it absolute (Flower never changes directory).
PATH = {"path": True}


def _require(condition: bool, key: str, value: object, expected: str) -> None:
    if not condition:
        raise ValueError(f"config value {key}={value!r} is invalid: expected {expected}")


@dataclass
class ImageSitesConfig:
    """How ``data.kind=images`` simulates multicoil k-space from magnitude images (docs/image-sites.md).

    Each volume's slices are padded to a centred square, resized to ``data.size`` (anti-aliased),
    divided by the volume's maximum, given a smooth random background phase and ``data.coils`` coil
    maps, and acquired with complex Gaussian noise.

    Attributes:
        snr: Signal-to-noise ratio of the simulated acquisition: the volume's mean foreground magnitude
            over the per-component standard deviation of the k-space noise (about the RSS image's SNR
            in the foreground). ``.inf``: no noise.
        contrast: The contrast name written to every file's ``acquisition`` attribute (fastMRI's names,
            e.g. ``AXT1``, ``CORPD_FBK``); a site's one-entry ``contrasts`` overrides it. Every image
            site needs one of the two.
        min_foreground_fraction: Slices whose foreground (pixels above 5 % of the volume's maximum)
            covers less of the slice than this are dropped (the empty slices at a volume's ends).
        max_slices: At most this many of the remaining slices per volume, evenly spaced (0 = all).
        slice_axis: The axis along which 3-D arrays (NIfTI volumes, 3-D ``.npy``) are sliced; DICOM and
            PNG series are stacks of their files.
        allow_upsampling: Accept images smaller than ``data.size`` (interpolated up, which invents detail:
            the zero-padding data crime; such volumes are marked ``upsampled`` in the site's record).
    """

    snr: float = 30.0
    contrast: str = ""
    min_foreground_fraction: float = 0.1
    max_slices: int = 0
    slice_axis: int = 2
    allow_upsampling: bool = False

    def __post_init__(self) -> None:
        _require(self.snr > 0, "data.images.snr", self.snr, "> 0 (.inf for no noise)")
        _require(0 <= self.min_foreground_fraction < 1, "data.images.min_foreground_fraction",
                 self.min_foreground_fraction, "in [0, 1)")
        _require(self.max_slices >= 0, "data.images.max_slices", self.max_slices, ">= 0 (0 = every kept slice)")
        _require(self.slice_axis in (0, 1, 2), "data.images.slice_axis", self.slice_axis, "0, 1 or 2")


@dataclass
class DataConfig:
    """Where site data lives and how k-space is undersampled.

    ``kind=synthetic``: fedforget writes phantom volumes to ``root/<site>/{train,test}``
    (one folder per site spec, named by its fingerprint). ``kind=fastmri``: ``root`` holds real
    fastMRI / M4Raw multicoil folders named by each site's ``train_dir`` / ``test_dir``; their
    k-space values are checked slice by slice as they are read, or every value before the run
    starts with ``scan_values=true`` (a full read of every file a site uses). ``kind=images``:
    ``root`` holds folders of magnitude images (NIfTI, DICOM, PNG, NPY) named by each site's
    ``train_dir`` / ``test_dir``; fedforget simulates multicoil k-space from them (``images``) and
    writes fastMRI files under ``cache_dir/image-sites/<site>-<fingerprint>``, once per specification.
    ``skull_stripped_share``: the chance that a synthetic brain volume is skull-stripped, the brain alone
    on an empty background as preprocessed research volumes and templates are (docs/image-sites.md).
    """

    kind: str = SYNTHETIC
    root: str = field(default="data/synthetic", metadata=PATH)
    size: int = 64
    coils: int = 4
    slices_per_volume: int = 8
    noise_std: float = 0.01
    skull_stripped_share: float = 0.0
    mask_type: str = EQUISPACED_FRACTION
    acceleration: int = 8
    center_fraction: float = 0.04
    cache_slices: bool = True
    scan_values: bool = False
    images: ImageSitesConfig = field(default_factory=ImageSitesConfig)

    def __post_init__(self) -> None:
        _require(self.kind in DATA_KINDS, "data.kind", self.kind, f"one of {DATA_KINDS}")
        if not self.root:
            needs = {FASTMRI: "data.root=/path/to/fastmri (the folder holding each site's train_dir/test_dir)",
                     IMAGES: "data.root=/path/to/images (the folder holding each site's train_dir/test_dir of "
                             "image files)"}
            raise ValueError(f"config value data.root is empty: data.kind={self.kind} needs "
                             + needs.get(self.kind, "a folder for the synthetic sites"))
        _require(self.size >= 16, "data.size", self.size, "an image size >= 16")
        _require(self.coils >= 1, "data.coils", self.coils, "a coil count >= 1")
        _require(self.slices_per_volume >= 1, "data.slices_per_volume", self.slices_per_volume, ">= 1")
        _require(self.noise_std >= 0, "data.noise_std", self.noise_std, ">= 0")
        _require(0 <= self.skull_stripped_share <= 1, "data.skull_stripped_share", self.skull_stripped_share,
                 "a share in [0, 1]")
        _require(self.mask_type in MASK_TYPES, "data.mask_type", self.mask_type, f"one of {MASK_TYPES}")
        _require(self.acceleration >= 1, "data.acceleration", self.acceleration, ">= 1")
        _require(0 < self.center_fraction < 1, "data.center_fraction", self.center_fraction, "in (0, 1)")


@dataclass
class PoisonConfig:
    """Corrupted training targets at one site (the corrective-unlearning setting, paper 001).

    ``fraction`` of the site's training slices get a ``kind`` artifact in their target
    images; ``known_fraction`` of those are known and given to unlearning as the forget
    set, the rest stay hidden in the site's data. The pattern is seeded by ``seed``.
    """

    kind: str = NO_POISON
    site: str = ""
    fraction: float = 0.5
    known_fraction: float = 0.5
    strength: float = 1.0
    seed: int = 7

    def __post_init__(self) -> None:
        _require(self.kind in POISON_TYPES, "poison.kind", self.kind, f"one of {POISON_TYPES}")
        _require(0 < self.fraction <= 1, "poison.fraction", self.fraction, "in (0, 1]")
        _require(0 < self.known_fraction <= 1, "poison.known_fraction", self.known_fraction, "in (0, 1]")
        _require(self.strength > 0, "poison.strength", self.strength, "> 0")

    @property
    def active(self) -> bool:
        return self.kind != NO_POISON


@dataclass
class SiteConfig:
    """One hospital. Synthetic sites are generated from ``seed``; real ones read folders.

    Real data: ``train_dir`` / ``test_dir`` are relative to ``data.root`` (or absolute);
    ``train_volumes`` / ``test_volumes`` cap the volumes used (0 = all) and
    ``volumes_from`` / ``test_volumes_from`` skip the first volumes of a folder (sorted by
    name), so several sites can hold disjoint parts of one fastMRI folder. Synthetic sites:
    ``contrasts`` lists fastMRI acquisition names dealt to the volumes round-robin (empty = the
    anatomy's default mix: brain AXT2/AXT1POST/AXFLAIR/AXT1, knee CORPD_FBK/CORPDFS_FBK).
    Image sites (``data.kind=images``): ``train_dir`` / ``test_dir`` hold the source images, the volume
    range picks among their volume entries (sorted by name), ``contrasts`` holds at most one name (the
    images' contrast; empty = ``data.images.contrast``) and ``seed`` draws the simulated phase, coils
    and noise.
    ``joins_at_round = j``: a hospital that joined late, taking part in FedAvg rounds j+1 .. R only
    (0 = every round); the oracle keeps the same schedule for the sites it trains.
    """

    anatomy: str = "brain"
    train_volumes: int = 8
    test_volumes: int = 2
    train_dir: str = ""
    test_dir: str = ""
    volumes_from: int = 0
    test_volumes_from: int = 0
    seed: int = 0
    contrasts: List[str] = field(default_factory=list)
    joins_at_round: int = 0

    def __post_init__(self) -> None:
        _require(self.anatomy in ANATOMIES, "site.anatomy", self.anatomy, f"one of {ANATOMIES}")
        _require(self.joins_at_round >= 0, "site.joins_at_round", self.joins_at_round,
                 ">= 0 (the rounds that pass before the site takes part; 0 = every round)")
        _require(self.train_volumes >= 0, "site.train_volumes", self.train_volumes, ">= 0 (0 = all)")
        _require(self.test_volumes >= 0, "site.test_volumes", self.test_volumes, ">= 0 (0 = all)")
        _require(self.volumes_from >= 0, "site.volumes_from", self.volumes_from, ">= 0")
        _require(self.test_volumes_from >= 0, "site.test_volumes_from", self.test_volumes_from, ">= 0")

    def volume_range(self, split: str) -> tuple[int, int]:
        """The volumes of a split's folder this site uses: (first, how many; 0 = all)."""
        if split == "train":
            return self.volumes_from, self.train_volumes
        return self.test_volumes_from, self.test_volumes


SITE_SPLITS = ("equal", "skewed")


@dataclass
class GeneratedSitesConfig:
    """A generated site list (``sites=generated``): ``brain`` + ``knee`` hospitals named
    ``brain-0 .. brain-(n-1)``, ``knee-0 ..`` (so ``unlearning.forget_site=knee-0`` still names one).

    ``split=equal``: every site holds ``train_volumes`` training volumes. ``split=skewed``: a
    site's count is drawn log-normally around ``train_volumes`` (sigma ``skew``, at least 1,
    seeded by ``seed``), the quantity skew of federated benchmarks. Synthetic sites get seeds
    ``seed + 10 * i``; real sites (``data.kind=fastmri``) take consecutive, disjoint volume
    ranges of their anatomy's ``*_train_dir`` / ``*_test_dir`` under ``data.root``.
    """

    brain: int = 0
    knee: int = 0
    train_volumes: int = 2
    test_volumes: int = 1
    split: str = "equal"
    skew: float = 0.5
    seed: int = 1000
    brain_train_dir: str = "brain/multicoil_train"
    brain_test_dir: str = "brain/multicoil_val"
    knee_train_dir: str = "knee/multicoil_train"
    knee_test_dir: str = "knee/multicoil_val"

    def __post_init__(self) -> None:
        _require(self.brain >= 0 and self.knee >= 0, "generated_sites.brain/knee", (self.brain, self.knee),
                 "site counts >= 0")
        _require(self.train_volumes >= 1, "generated_sites.train_volumes", self.train_volumes, ">= 1")
        _require(self.test_volumes >= 1, "generated_sites.test_volumes", self.test_volumes, ">= 1")
        _require(self.split in SITE_SPLITS, "generated_sites.split", self.split, f"one of {SITE_SPLITS}")
        _require(self.skew >= 0, "generated_sites.skew", self.skew, ">= 0")

    @property
    def active(self) -> bool:
        return self.brain + self.knee > 0


SHAPE_KEYS = ("num_cascades", "chans", "pools", "sens_chans", "sens_pools")
# The one place model shapes live (fedforget.recon.models.PRESETS is built from it).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    # CPU demo: 124,222 parameters.
    "tiny": {"num_cascades": 4, "chans": 8, "pools": 2, "sens_chans": 4, "sens_pools": 2},
    # 1,691,780 parameters.
    "small": {"num_cascades": 6, "chans": 12, "pools": 3, "sens_chans": 6, "sens_pools": 3},
    # fastMRI's default and the papers' model: 29,936,966 parameters.
    "paper": {"num_cascades": 12, "chans": 18, "pools": 4, "sens_chans": 8, "sens_pools": 4},
}


@dataclass
class ModelConfig:
    """E2E-VarNet shape (fastMRI's ``VarNet``): a preset, each value of which a key may override (0 = the preset's)."""

    preset: str = "tiny"
    num_cascades: int = 0
    chans: int = 0
    pools: int = 0
    sens_chans: int = 0
    sens_pools: int = 0

    def __post_init__(self) -> None:
        _require(self.preset in MODEL_PRESETS, "model.preset", self.preset, f"one of {sorted(MODEL_PRESETS)}")
        for key in SHAPE_KEYS:
            value = getattr(self, key)
            _require(value >= 0, f"model.{key}", value, ">= 1 (or 0 for the preset's value)")

    def shape(self) -> dict[str, int]:
        """The resolved shape: the preset's values, with every non-zero key overriding its own."""
        return {key: getattr(self, key) or MODEL_PRESETS[self.preset][key] for key in SHAPE_KEYS}


@dataclass
class HistoryConfig:
    """The server's round history, which the history-based unlearning methods replay.

    For every ``every``-th round (rounds 1, 1 + every, ...; 0 keeps no history) the server keeps the
    global model at the round's start and each site's update (its weights after local training minus
    that start) with its example count. ``dtype`` is the updates' storage precision; the global models
    are always kept in fp32, so a rollback resumes from exactly the model it names.
    """

    every: int = 0
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        _require(self.every >= 0, "federation.history.every", self.every, ">= 0 (0 = keep no history)")
        _require(self.dtype in HISTORY_DTYPES, "federation.history.dtype", self.dtype, f"one of {HISTORY_DTYPES}")

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def keeps(self, server_round: int) -> bool:
        """Whether round ``server_round`` (1-based) is kept."""
        return self.enabled and (server_round - 1) % self.every == 0


FAULT_MODES = ("exit", "error", "hang", "bug")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class FaultConfig:
    """Failure injection for drills and tests (off unless ``site`` or ``server_exit_after_round`` is set).

    ``site`` fails its work in ``phase`` (``federated``, ``oracle`` or ``unlearn/<method>``)
    at rounds (in ``unlearn/<method>``: the method's exchanges, the ledger's steps, retries
    included) ``round`` .. ``round + rounds - 1``: ``exit`` kills the ClientApp process,
    ``error`` fails like an unavailable site (a site fault: recorded, the run goes on), ``hang``
    sleeps past the server's timeout, ``bug`` raises as a programming error would (the run
    stops with the site's traceback).
    ``server_exit_after_round`` kills the ServerApp process right after that round of the
    original model's training is saved (the resume drill); a resumed run never triggers
    it again.
    """

    site: str = ""
    phase: str = FEDERATED
    round: int = 0
    rounds: int = 1
    mode: str = "exit"
    server_exit_after_round: int = 0

    def __post_init__(self) -> None:
        _require(self.mode in FAULT_MODES, "federation.fault.mode", self.mode, f"one of {FAULT_MODES}")
        _require(self.rounds >= 1, "federation.fault.rounds", self.rounds, ">= 1")
        _require(self.round >= 0, "federation.fault.round", self.round, ">= 0")

    def hits(self, site: str, phase: str, server_round: int) -> bool:
        return (phase == self.phase and site == self.site
                and self.round <= server_round < self.round + self.rounds)


@dataclass
class FederationConfig:
    """FedAvg training: rounds of local Adam steps on every participating site."""

    rounds: int = 30
    local_steps: int = 8
    batch_size: int = 4
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_final_fraction: float = 0.1
    l1_weight: float = 0.0
    grad_clip: float = 0.0
    eval_every: int = 1
    timeout_s: float = 900.0
    device: str = "auto"
    bf16: bool = False
    client_cpus: float = 1.0
    client_gpus: float = 0.0
    checkpoint_every: int = 1
    history: HistoryConfig = field(default_factory=HistoryConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        for key in ("rounds", "local_steps", "batch_size", "eval_every", "checkpoint_every"):
            value = getattr(self, key)
            _require(value >= 1, f"federation.{key}", value, ">= 1")
        _require(self.lr > 0, "federation.lr", self.lr, "> 0")
        _require(self.lr_schedule in LR_SCHEDULES, "federation.lr_schedule", self.lr_schedule, f"one of {LR_SCHEDULES}")
        _require(0 < self.lr_final_fraction <= 1, "federation.lr_final_fraction", self.lr_final_fraction, "in (0, 1]")
        _require(self.l1_weight >= 0, "federation.l1_weight", self.l1_weight, ">= 0")
        _require(self.grad_clip >= 0, "federation.grad_clip", self.grad_clip, ">= 0 (0 = off)")
        _require(self.timeout_s > 0, "federation.timeout_s", self.timeout_s, "> 0")
        _require(self.device in DEVICES, "federation.device", self.device, f"one of {DEVICES}")
        _require(self.client_cpus > 0, "federation.client_cpus", self.client_cpus, "> 0")
        _require(self.client_gpus >= 0, "federation.client_gpus", self.client_gpus, ">= 0")

    def round_lr(self, server_round: int, rounds: int = 0) -> float:
        """The local Adam learning rate of round ``server_round`` (1-based): constant, or cosine-annealed
        from ``lr`` in the first round to ``lr * lr_final_fraction`` in the last. ``rounds`` compresses the
        schedule to that many rounds (retraining on a smaller budget); 0 keeps ``self.rounds``."""
        rounds = rounds or self.rounds
        if self.lr_schedule == "constant" or rounds == 1:
            return self.lr
        progress = (server_round - 1) / (rounds - 1)
        final = self.lr_final_fraction
        return self.lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))

    @property
    def training_steps(self) -> int:
        """Optimizer steps along the model's trajectory (rounds x local steps)."""
        return self.rounds * self.local_steps


@dataclass
class GAL1Config:
    """GA-l1: ``-J(forget) + gamma * mean|theta|`` (the L1 term is normalised by parameter count)."""

    gamma: float = 1.0

    def __post_init__(self) -> None:
        _require(self.gamma >= 0, "unlearning.ga_l1.gamma", self.gamma, ">= 0")


NOISE_DISTRIBUTIONS = ("gaussian", "half_normal")


@dataclass
class NLConfig:
    """Noisy labels: forget targets + ``lam * N(0, I)``, relative to each slice's max if ``relative``.

    ``distribution=half_normal`` adds ``lam * |N(0, I)|`` as the Erase-to-Enhance code did (a
    positive bias), instead of the paper's zero-mean Gaussian.
    """

    lam: float = 0.5
    relative: bool = True
    distribution: str = "gaussian"

    def __post_init__(self) -> None:
        _require(self.lam >= 0, "unlearning.nl.lam", self.lam, ">= 0")
        _require(self.distribution in NOISE_DISTRIBUTIONS, "unlearning.nl.distribution", self.distribution,
                 f"one of {NOISE_DISTRIBUTIONS}")


@dataclass
class SSDConfig:
    """Selective Synaptic Dampening: select ``I_f > alpha * I_r``, scale by ``min(lam * I_r / I_f, 1)``."""

    alpha: float = 10.0
    lam: float = 1.0

    def __post_init__(self) -> None:
        _require(self.alpha > 0, "unlearning.ssd.alpha", self.alpha, "> 0")
        _require(self.lam > 0, "unlearning.ssd.lam", self.lam, "> 0")


@dataclass
class PGAConfig:
    """Projected gradient ascent inside an L2 ball around the retain-site reference model."""

    radius_fraction: float = 0.33
    ascent_share: float = 0.5

    def __post_init__(self) -> None:
        _require(self.radius_fraction > 0, "unlearning.pga.radius_fraction", self.radius_fraction, "> 0")
        _require(0 < self.ascent_share < 1, "unlearning.pga.ascent_share", self.ascent_share, "in (0, 1)")


@dataclass
class GradSurgeryConfig:
    """Forget-gradient ascent projected orthogonal to the retain gradient, then retain fine-tuning.

    ``conditional=true`` projects only when the two conflict, i.e. when ascending the forget
    loss would also raise the retain loss (forget and retain gradients have a positive dot
    product), as PCGrad does (Yu et al. 2020); otherwise the forget gradient is used whole.
    """

    ascent_share: float = 0.5
    conditional: bool = False

    def __post_init__(self) -> None:
        _require(0 < self.ascent_share < 1, "unlearning.grad_surgery.ascent_share", self.ascent_share, "in (0, 1)")


@dataclass
class BadTeacherConfig:
    """Regression bad teacher: match a random teacher on forget data, the original on retain data."""

    forget_weight: float = 1.0

    def __post_init__(self) -> None:
        _require(self.forget_weight >= 0, "unlearning.bad_teacher.forget_weight", self.forget_weight, ">= 0")


@dataclass
class ActivationPruningConfig:
    """Prune channels that fire most on forget data, then repair on retain data (paper 004, sec. 3.3).

    A layer's channels whose mean activation on forget data lies above its quantile ``q`` are
    pruned; ``q`` runs from ``q_early`` at full resolution to ``q_deep`` at the U-Net's bottleneck.
    Trade-off knob: ``q_deep`` (lower prunes more: more forgetting, more to repair).
    """

    q_early: float = 0.99
    q_deep: float = 0.90

    def __post_init__(self) -> None:
        _require(0 < self.q_early < 1, "unlearning.activation_pruning.q_early", self.q_early, "in (0, 1)")
        _require(0 < self.q_deep < 1, "unlearning.activation_pruning.q_deep", self.q_deep, "in (0, 1)")


@dataclass
class SoftRelabelConfig:
    """Relabel forget slices from a retain-taught teacher, weighted by similarity (paper 004, sec. 3.1).

    ``teacher_share`` of the budget trains the retain teacher on retain data; the rest fine-tunes
    on soft labels ``a T(x) + (1 - a) Z(x)``, ``a = exp(-e / temperature)``. Trade-off knob:
    ``temperature`` (smaller forgets harder).
    """

    teacher_share: float = 0.5
    temperature: float = 0.05

    def __post_init__(self) -> None:
        _require(0 < self.teacher_share < 1, "unlearning.soft_relabel.teacher_share", self.teacher_share, "in (0, 1)")
        _require(self.temperature > 0, "unlearning.soft_relabel.temperature", self.temperature, "> 0")


@dataclass
class BoundaryRelabelConfig:
    """Relabel forget slices with the original's output on a nearby worst-case input (paper 003).

    ``radius``: the L-infinity bound of the k-space perturbation, relative to the RMS of each
    slice's measured samples (the trade-off knob: larger moves forget outputs further);
    ``inner_steps``: sign-gradient steps of the inner search; ``retain_weight``: weight of the
    retain loss in the outer fine-tuning (0 = forget data only).
    """

    radius: float = 0.5
    inner_steps: int = 3
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        _require(self.radius > 0, "unlearning.boundary_relabel.radius", self.radius, "> 0")
        _require(self.inner_steps >= 1, "unlearning.boundary_relabel.inner_steps", self.inner_steps, ">= 1")
        _require(self.retain_weight >= 0, "unlearning.boundary_relabel.retain_weight", self.retain_weight, ">= 0")


FEDERASER_CALIBRATIONS = ("site", "aggregate")


@dataclass
class FedEraserConfig:
    """FedEraser (Liu et al. 2021): replay every ``interval``-th stored round over the retain sites.

    In each replayed round every retain site trains ``ceil(ratio x local_steps)`` steps from the unlearned
    model (the calibration round), and the server applies, per parameter tensor, the stored update's norm
    in the calibration update's direction. ``calibrate=site`` does this per site, then averages (the
    paper's equation); ``aggregate`` calibrates the averaged update (the authors' code). Site compute is
    ``ratio / interval`` of retraining's.
    """

    interval: int = 2
    ratio: float = 0.5
    calibrate: str = "site"

    def __post_init__(self) -> None:
        _require(self.interval >= 1, "unlearning.federaser.interval", self.interval, ">= 1 (rounds between replays)")
        _require(0 < self.ratio <= 1, "unlearning.federaser.ratio", self.ratio, "in (0, 1]")
        _require(self.calibrate in FEDERASER_CALIBRATIONS, "unlearning.federaser.calibrate", self.calibrate,
                 f"one of {FEDERASER_CALIBRATIONS}")


@dataclass
class FedRecoverConfig:
    """FedRecover (Cao et al. 2023): retrain from the initial model, estimating most retain updates.

    The retain sites compute exact updates in the first ``warmup_rounds``, every ``correction_period``-th
    round after them and the last ``final_rounds``; in every other round the server estimates each
    site's update from its stored one with an L-BFGS approximation of the update's Jacobian, built from
    the last ``buffer_size`` exact rounds. Abnormality fixing: with ``abnormality_tolerance = a > 0``,
    ``tau`` is the largest over rounds of the (1 - a) quantile of the stored updates' absolute elements,
    and a site whose estimate has an element above ``tau`` is asked for its exact update (0: off).
    """

    warmup_rounds: int = 2
    correction_period: int = 6
    final_rounds: int = 1
    buffer_size: int = 2
    abnormality_tolerance: float = 0.001

    def __post_init__(self) -> None:
        _require(self.warmup_rounds >= 1, "unlearning.fedrecover.warmup_rounds", self.warmup_rounds, ">= 1")
        _require(self.correction_period >= 1, "unlearning.fedrecover.correction_period", self.correction_period,
                 ">= 1 (1 = an exact update in every round)")
        _require(self.final_rounds >= 0, "unlearning.fedrecover.final_rounds", self.final_rounds, ">= 0")
        _require(self.buffer_size >= 1, "unlearning.fedrecover.buffer_size", self.buffer_size, ">= 1")
        _require(0 <= self.abnormality_tolerance < 1, "unlearning.fedrecover.abnormality_tolerance",
                 self.abnormality_tolerance, "in [0, 1) (0 = off)")


@dataclass
class SIFUConfig:
    """SIFU (Fraboni et al. 2024): roll back to the last round whose sensitivity bound for the forget site
    is at most ``psi* = epsilon sigma / sqrt(2 ln(1.25 / delta))``, add Gaussian noise of std ``sigma`` to
    every weight, then continue FedAvg without the forget site for ``continue_rounds`` rounds (0: the
    rounds left of the original schedule). The bound grows each round by ``p_i / (1 - p_i)`` times the
    distance between site i's local model and the new global model, after shrinking by
    ``(1 - lr x weight_decay)^K`` (the SGD-with-weight-decay contraction; training here uses Adam without
    weight decay, so the default 0 makes it a running sum). ``delta = 0`` uses 1 / (number of sites).
    """

    epsilon: float = 10.0
    sigma: float = 0.05
    delta: float = 0.0
    weight_decay: float = 0.0
    continue_rounds: int = 0

    def __post_init__(self) -> None:
        _require(self.epsilon > 0, "unlearning.sifu.epsilon", self.epsilon, "> 0")
        _require(self.sigma >= 0, "unlearning.sifu.sigma", self.sigma, ">= 0 (the noise's standard deviation)")
        _require(0 <= self.delta < 1, "unlearning.sifu.delta", self.delta, "in [0, 1) (0 = 1 / number of sites)")
        _require(self.weight_decay >= 0, "unlearning.sifu.weight_decay", self.weight_decay, ">= 0")
        _require(self.continue_rounds >= 0, "unlearning.sifu.continue_rounds", self.continue_rounds,
                 ">= 0 (0 = the rounds left of the original schedule)")


@dataclass
class PUFConfig:
    """PUF (Mora et al. 2025): the forget site trains one local round on its forget set from the original
    model, and the server applies that update negated and multiplied by ``scale`` (the authors' 2.0 for
    the round in which only the forget client trains); ``recovery_rounds`` FedAvg rounds over the retain
    sites follow, a fixed budget (the authors' code stops when test accuracy reaches the retrained
    model's, which peeks at the oracle). ``lr`` is the local learning rate of both (0: the training
    schedule's last round's, as the authors continue their schedule)."""

    scale: float = 2.0
    recovery_rounds: int = 3
    lr: float = 0.0

    def __post_init__(self) -> None:
        _require(self.scale > 0, "unlearning.puf.scale", self.scale, "> 0")
        _require(self.lr >= 0, "unlearning.puf.lr", self.lr, ">= 0 (0 = the training schedule's last rate)")
        _require(self.recovery_rounds >= 0, "unlearning.puf.recovery_rounds", self.recovery_rounds, ">= 0")


FUKD_REPAIRS = ("rounds", "kd")


@dataclass
class FUKDConfig:
    """FUKD (Wu et al. 2022): subtract the forget site's accumulated weighted updates from the final model,
    then repair it: ``repair=rounds`` runs ``repair_rounds`` FedAvg rounds over the retain sites;
    ``repair=kd`` distils the original model into it on the server's retain data (needs
    ``unlearning.retain_access=server``), for ``kd_steps`` steps (0 = the unlearning budget). ``lr`` is the
    repair rounds' local learning rate (0: the training schedule's last round's)."""

    repair: str = "rounds"
    repair_rounds: int = 3
    kd_steps: int = 0
    lr: float = 0.0

    def __post_init__(self) -> None:
        _require(self.repair in FUKD_REPAIRS, "unlearning.fukd.repair", self.repair, f"one of {FUKD_REPAIRS}")
        _require(self.repair_rounds >= 0, "unlearning.fukd.repair_rounds", self.repair_rounds, ">= 0")
        _require(self.kd_steps >= 0, "unlearning.fukd.kd_steps", self.kd_steps, ">= 0 (0 = unlearning budget)")
        _require(self.lr >= 0, "unlearning.fukd.lr", self.lr, ">= 0 (0 = the training schedule's last rate)")


@dataclass
class RetrainBudgetConfig:
    """The control every method must beat: FedAvg over the retain sites from the initial model with a
    fraction of retraining's site compute, on the learning-rate schedule compressed to that budget.

    ``retrain_budget`` in the methods trains at ``fraction``; with ``match``, one more model
    ``retrain_budget@<method>`` per history-based method of the run, at that method's measured site
    compute; ``curve`` adds ``retrain_budget@<fraction>`` models (the frontier figure's curve).
    """

    fraction: float = 0.25
    match: bool = True
    curve: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key, value in [("fraction", self.fraction)] + [("curve", v) for v in self.curve]:
            _require(0 < value <= 1, f"unlearning.retrain_budget.{key}", value,
                     "a fraction of retraining's site compute in (0, 1]")


@dataclass
class UnlearningConfig:
    """Which site is removed, which methods run, and what they may use.

    ``local_steps = k``: each party runs k optimizer steps of its own term per message round
    and returns a model delta (k = 1: one gradient per party per step and the server's Adam,
    the exact per-step protocol). ``round_retries``: how many times a round is re-sent to a
    site that failed it before the method stops with the site's reason.
    """

    forget_site: str = "knee-0"
    methods: List[str] = field(default_factory=lambda: ["ft", "nl_ft"])
    retain_fraction: float = 0.1
    retain_access: str = "sites"
    budget_fraction: float = 0.1
    steps: int = 0
    lr: float = 1e-3
    batch_size: int = 4
    eval_every: int = 4
    local_steps: int = 1
    round_retries: int = 1
    from_checkpoint: str = field(default="", metadata=PATH)
    server_retain_root: str = field(default="", metadata=PATH)
    ga_l1: GAL1Config = field(default_factory=GAL1Config)
    nl: NLConfig = field(default_factory=NLConfig)
    ssd: SSDConfig = field(default_factory=SSDConfig)
    lfssd: SSDConfig = field(default_factory=SSDConfig)
    pga: PGAConfig = field(default_factory=PGAConfig)
    grad_surgery: GradSurgeryConfig = field(default_factory=GradSurgeryConfig)
    bad_teacher: BadTeacherConfig = field(default_factory=BadTeacherConfig)
    activation_pruning: ActivationPruningConfig = field(default_factory=ActivationPruningConfig)
    soft_relabel: SoftRelabelConfig = field(default_factory=SoftRelabelConfig)
    boundary_relabel: BoundaryRelabelConfig = field(default_factory=BoundaryRelabelConfig)
    federaser: FedEraserConfig = field(default_factory=FedEraserConfig)
    sifu: SIFUConfig = field(default_factory=SIFUConfig)
    fedrecover: FedRecoverConfig = field(default_factory=FedRecoverConfig)
    fukd: FUKDConfig = field(default_factory=FUKDConfig)
    puf: PUFConfig = field(default_factory=PUFConfig)
    retrain_budget: RetrainBudgetConfig = field(default_factory=RetrainBudgetConfig)

    def __post_init__(self) -> None:
        _require(0 < self.retain_fraction <= 1, "unlearning.retain_fraction", self.retain_fraction, "in (0, 1]")
        _require(self.retain_access in RETAIN_ACCESS, "unlearning.retain_access", self.retain_access,
                 f"one of {RETAIN_ACCESS}")
        _require(0 < self.budget_fraction <= 1, "unlearning.budget_fraction", self.budget_fraction, "in (0, 1]")
        _require(self.steps >= 0, "unlearning.steps", self.steps, ">= 0 (0 = budget_fraction x training steps)")
        _require(self.lr > 0, "unlearning.lr", self.lr, "> 0")
        _require(self.batch_size >= 1, "unlearning.batch_size", self.batch_size, ">= 1")
        _require(self.eval_every >= 1, "unlearning.eval_every", self.eval_every, ">= 1")
        _require(self.local_steps >= 1, "unlearning.local_steps", self.local_steps,
                 ">= 1 (optimizer steps per party per message round)")
        _require(self.round_retries >= 0, "unlearning.round_retries", self.round_retries, ">= 0")

    def budget_steps(self, training_steps: int) -> int:
        """Optimizer-step budget shared by every method (explicit ``steps`` or a fraction of training)."""
        budget = self.steps or int(round(self.budget_fraction * training_steps))
        if budget < 1:
            raise ValueError(
                f"config value unlearning.budget_fraction={self.budget_fraction} gives a budget of 0 steps "
                f"for {training_steps} training steps: expected a budget of at least 1 step"
            )
        return budget


@dataclass
class ReportConfig:
    """What the report renders.

    Reconstruction grids need a site's test slices at the server. The server reads them only in a
    simulation on synthetic data, or when ``server_reads_site_data=true`` says the coordinator may
    read the sites' test files (a simulation of real data on one machine, with the data owners'
    consent); otherwise the grids are skipped with a note.
    """

    figures: bool = True
    server_reads_site_data: bool = False


@dataclass
class ExperimentConfig:
    """The whole experiment: composed from the groups, then validated as one."""

    name: str = "default"
    seed: int = 0
    cache_dir: str = field(default="", metadata=PATH)
    data: DataConfig = field(default_factory=DataConfig)
    sites: Dict[str, SiteConfig] = field(default_factory=dict)
    generated_sites: GeneratedSitesConfig = field(default_factory=GeneratedSitesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    unlearning: UnlearningConfig = field(default_factory=UnlearningConfig)
    poison: PoisonConfig = field(default_factory=PoisonConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if not self.sites:
            raise ValueError("config has no sites: expected at least two entries under 'sites'")
        forget = self.unlearning.forget_site
        if forget not in self.sites:
            raise ValueError(
                f"config value unlearning.forget_site={forget!r} is not a site of this experiment: "
                f"expected one of {sorted(self.sites)}"
            )
        if len(self.retain_sites) < 1:
            raise ValueError("config needs at least one retain site besides the forget site")
        for name in self.sites:
            _require(bool(name) and "/" not in name and not name.startswith("."), "sites", name,
                     "site names usable as folder names")
        if self.poison.active:
            if not self.poison.site:
                self.poison.site = forget
            _require(self.poison.site == forget, "poison.site", self.poison.site,
                     f"the forget site {forget!r} (the poisoned site is the one whose influence is removed)")
        self._check_joins()
        self._check_image_sites()
        fault_site = self.federation.fault.site
        _require(not fault_site or fault_site in self.sites, "federation.fault.site", fault_site,
                 f"empty or one of {list(self.sites)}")

    def _check_joins(self) -> None:
        rounds = self.federation.rounds
        for name, site in self.sites.items():
            _require(site.joins_at_round < rounds, f"sites.{name}.joins_at_round", site.joins_at_round,
                     f"fewer than federation.rounds={rounds} (the site must take part in a round)")
        for who, names in (("every site", self.site_names), ("the oracle's sites", self.oracle_sites)):
            if min(self.sites[n].joins_at_round for n in names) > 0:
                raise ValueError(f"config has no site in the first round among {who}: expected at least one of "
                                 f"{names} with joins_at_round=0")

    def _check_image_sites(self) -> None:
        if self.data.kind != IMAGES:
            return
        for name, site in self.sites.items():
            _require(len(site.contrasts) <= 1, f"sites.{name}.contrasts", list(site.contrasts),
                     "at most one name on data.kind=images (the contrast of the site's images)")
            _require(bool(self.image_contrast(name).strip()), f"sites.{name}.contrasts", list(site.contrasts),
                     "the contrast of the site's images, e.g. [AXT1] (or set data.images.contrast for every "
                     "site): it is written to each file's acquisition attribute")

    def image_contrast(self, site: str) -> str:
        """The contrast an image site's files name: its one ``contrasts`` entry, else ``data.images.contrast``."""
        contrasts = self.sites[site].contrasts
        return str(contrasts[0]) if contrasts else self.data.images.contrast

    @property
    def reads_round_history(self) -> bool:
        """Whether a listed unlearning method reads the round history (federation.history must keep it)."""
        return any(name in HISTORY_EVERY for name in self.unlearning.methods)

    @property
    def joins(self) -> dict[str, int]:
        """Rounds that pass before each site takes part (``sites.<site>.joins_at_round``)."""
        return {name: site.joins_at_round for name, site in self.sites.items()}

    @property
    def site_names(self) -> list[str]:
        return list(self.sites)

    @property
    def retain_sites(self) -> list[str]:
        return [name for name in self.sites if name != self.unlearning.forget_site]

    def is_poisoned(self, site: str) -> bool:
        return self.poison.active and site == self.poison.site

    @property
    def oracle_sites(self) -> list[str]:
        """Who trains the oracle: every site minus its poisoned slices, or the retain sites."""
        return self.site_names if self.poison.active else self.retain_sites


def path_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """The dotted keys of every path field (marked with ``PATH``) of a config dataclass, recursively."""
    keys = []
    for item in dataclasses.fields(cls):
        if item.metadata.get("path"):
            keys.append(prefix + item.name)
        elif dataclasses.is_dataclass(item.type if isinstance(item.type, type) else None):
            keys += path_keys(item.type, f"{prefix}{item.name}.")
        elif isinstance(item.default_factory, type) and dataclasses.is_dataclass(item.default_factory):
            keys += path_keys(item.default_factory, f"{prefix}{item.name}.")
    return keys
