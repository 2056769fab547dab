"""Names defined once: model names, data kinds, poison kinds, mask types, phase tags.

Plain strings (not enums), so that Hydra / OmegaConf take them from YAML and overrides as they
are and every file that records them (results.json, progress.jsonl, TensorBoard tags) holds the
same plain string. :mod:`fedforget.configs.schema` re-exports them and validates config values
against the tuples; every other module imports them from here (or from the schema).
"""

from __future__ import annotations

# Models every run holds besides its unlearned ones (results.json "models" keys, checkpoint stems).
ZERO_FILLED = "zero_filled"  # the no-learning baseline (RSS of the undersampled k-space)
ORIGINAL = "original"  # federated training over every site
ORACLE = "oracle"  # the same training without the forget site: the gold standard
REFERENCE_MODELS = (ZERO_FILLED, ORIGINAL, ORACLE)

# data.kind: phantom volumes fedforget writes, real fastMRI / M4Raw folders, or k-space fedforget simulates
# from real magnitude images (NIfTI, DICOM, PNG, NPY).
SYNTHETIC = "synthetic"
FASTMRI = "fastmri"
IMAGES = "images"
DATA_KINDS = (SYNTHETIC, FASTMRI, IMAGES)
# What each kind's k-space is: a site's data description records it as ``kspace_source`` (audit.json
# ``data.sites.<site>``), so a result on simulated k-space is never mistaken for one on raw data.
KSPACE_SOURCES = {SYNTHETIC: "simulated_from_phantoms", FASTMRI: "measured",
                  IMAGES: "simulated_from_magnitude_images"}

# poison.kind: no poisoning, or one of the artifacts fedforget.recon.poison draws.
NO_POISON = "none"
LESION = "lesion"
GHOSTING = "ghosting"
NOISE = "noise"
POISON_TYPES = (NO_POISON, LESION, GHOSTING, NOISE)

# data.mask_type: fastMRI's column masks. EQUISPACED_FRACTION is what the fastMRI multicoil data and the
# papers' 8x / 0.04 VarNet setting use; the other two are fastMRI's alternatives.
EQUISPACED_FRACTION = "equispaced_fraction"
EQUISPACED = "equispaced"
RANDOM = "random"
MASK_TYPES = (EQUISPACED_FRACTION, EQUISPACED, RANDOM)

# Phase tags (progress.jsonl "phase", TensorBoard "<phase>/<metric>", federation.fault.phase).
FEDERATED = "federated"  # the original model's training
ORACLE_PHASE = ORACLE  # the oracle's training
UNLEARN = "unlearn"  # unlearn/<method>: one method's removal
FINAL = "final"  # final/<model>: a model's final evaluation at every site
# The phase in which each trained reference model is trained.
TRAINING_PHASES = {ORIGINAL: FEDERATED, ORACLE: ORACLE_PHASE}


def unlearn_phase(method: str) -> str:
    """The phase tag of one method's removal: ``unlearn/<method>``."""
    return f"{UNLEARN}/{method}"


def final_phase(model: str) -> str:
    """The phase tag of a model's final evaluation: ``final/<model>``."""
    return f"{FINAL}/{model}"


def is_unlearn_phase(phase: str) -> bool:
    return phase.startswith(f"{UNLEARN}/")
