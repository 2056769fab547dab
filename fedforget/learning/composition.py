"""Model composition: a new model as a weighted sum of several models' changes from one original.

``w = w_orig + sum_i weight_i * (w_i - w_orig)``, tensor by tensor over the state dict. Several
unlearned models of the same original (e.g. one removing a site's texture, one its anatomy) can so
be merged without touching any site's data: the server already holds every operand.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

import torch

from fedforget.learning.checkpoints import State

# The results.json name says what was merged; it is not a file name (see composition_file_stem).
NAME_PREFIX = "compose"
# A checkpoint's stem may hold only these characters (portable file names, nothing a shell expands).
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
# Longer stems are cut and suffixed with a digest of the whole (file systems stop at 255 bytes).
_MAX_STEM = 150


class CompositionError(ValueError):
    """Models that cannot be composed (the message names the model, the tensor and what was expected)."""


def compose_states(original: State, models: Sequence[State], weights: Sequence[float],
                   names: Sequence[str] | None = None) -> State:
    """The original plus the weighted sum of each model's change from it.

    Floating-point tensors are combined in float64 as ``(1 - sum(weights)) * original + sum_i
    weights_i * model_i`` (the same sum, rearranged) and cast back to the original's dtype; a term
    whose coefficient is exactly 0 is left out, so weights ``(1, 0)`` return the first model bit for
    bit. Other tensors (integer buffers) must be equal in every model and are copied.

    Args:
        original: The model every operand was derived from (``checkpoints/original.pt``).
        models: The operands, each with the original's tensor names and shapes.
        weights: One finite weight per model.
        names: The models' names, for error messages (default ``model 0``, ``model 1``, ...).

    Returns:
        The composed state dict, on the CPU, in the original's tensor order.

    Raises:
        CompositionError: No models, a weight count that differs from the model count, a weight
            that is not finite, or a model whose tensors differ from the original's in names,
            shapes or dtypes, or in value for a non-float tensor.
    """
    labels = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
    if not models:
        raise CompositionError("no models to compose: expected at least one")
    if len(weights) != len(models):
        raise CompositionError(f"{len(models)} models but {len(weights)} weights: expected one weight per model")
    if len(labels) != len(models):
        raise CompositionError(f"{len(models)} models but {len(labels)} names: expected one name per model")
    coefficients = [float(w) for w in weights]
    for label, weight in zip(labels, coefficients):
        if not math.isfinite(weight):
            raise CompositionError(f"the weight of {label} is {weight}: expected a finite number")
    for label, state in zip(labels, models):
        _check_same_layout(original, state, label)
    own = 1.0 - math.fsum(coefficients)
    composed: State = {}
    for key, base in original.items():
        base = base.detach().cpu()
        if not base.is_floating_point():
            for label, state in zip(labels, models):
                if not torch.equal(state[key].cpu(), base):
                    raise CompositionError(f"{label}: tensor {key} ({base.dtype}) differs from the original's; "
                                           "non-float tensors cannot be weighted and must be equal in every model")
            composed[key] = base.clone()
            continue
        total = torch.zeros(base.shape, dtype=torch.float64)
        for coefficient, tensor in ((own, base), *zip(coefficients, (s[key] for s in models))):
            if coefficient != 0.0:  # a zero term adds nothing, and a 0 * -0.0 or 0 * inf must not change the sum
                total += coefficient * tensor.detach().cpu().to(torch.float64)
        composed[key] = total.to(base.dtype)
    return composed


def _check_same_layout(original: State, state: State, label: str) -> None:
    """Raise unless ``state`` has the original's tensor names, shapes and dtypes."""
    missing, extra = sorted(set(original) - set(state)), sorted(set(state) - set(original))
    if missing or extra:
        raise CompositionError(f"{label} does not have the original's tensors (missing {missing[:3]}, extra "
                               f"{extra[:3]}): expected a model of the same architecture")
    for key, base in original.items():
        tensor = state[key]
        if tensor.shape != base.shape or tensor.dtype != base.dtype:
            raise CompositionError(f"{label}: tensor {key} is {tuple(tensor.shape)} {tensor.dtype}, the original's "
                                   f"{tuple(base.shape)} {base.dtype}: expected the same shape and dtype")


def format_weight(weight: float) -> str:
    """A weight as its shortest exact decimal (``0.5``, ``1``, ``-0.25``, ``1e-05``)."""
    text = repr(float(weight))
    return text[:-2] if text.endswith(".0") else text


def composition_name(models: Sequence[str], weights: Sequence[float]) -> str:
    """The composed model's name in results.json, e.g. ``compose(ft*0.5+nl_ft*0.5)``."""
    return f"{NAME_PREFIX}(" + "+".join(f"{m}*{format_weight(w)}" for m, w in zip(models, weights)) + ")"


def composition_file_stem(models: Sequence[str], weights: Sequence[float]) -> str:
    """A portable checkpoint stem for the composition, e.g. ``compose+ft_x0.5+nl_ft_x0.5``.

    Only letters, digits and ``._@+-`` (anything else becomes ``_``), so the name needs no quoting in a
    shell and is valid on every common file system; a stem that would be very long is cut and made
    unique again with a digest of the full name.
    """
    stem = _UNSAFE.sub("_", "+".join([NAME_PREFIX, *(f"{m}_x{format_weight(w)}" for m, w in zip(models, weights))]))
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha256(composition_name(models, weights).encode()).hexdigest()[:12]
        stem = f"{stem[:_MAX_STEM - 13]}-{digest}"
    return stem
