"""Names defined once (fedforget.configs.names, re-exported by the schema): the config validates against them,
the CLI offers them, and no module defines its own copy."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest

from fedforget.cli import _parser
from fedforget.configs import load_experiment, names, schema
from fedforget.configs.schema import DataConfig, PoisonConfig

PACKAGE = Path(__file__).resolve().parents[1] / "fedforget"
BENCH = PACKAGE.parent / "bench"
# Constants that only configs/names.py may assign (elsewhere they are imported).
DEFINED_ONCE = ("ZERO_FILLED", "ORIGINAL", "ORACLE", "REFERENCE_MODELS", "SYNTHETIC", "FASTMRI", "IMAGES",
                "DATA_KINDS", "KSPACE_SOURCES", "MASK_TYPES", "POISON_TYPES", "FEDERATED", "TRAINING_PHASES")


def test_the_names_are_the_strings_the_output_contract_records() -> None:
    assert (names.ZERO_FILLED, names.ORIGINAL, names.ORACLE) == ("zero_filled", "original", "oracle")
    assert names.DATA_KINDS == ("synthetic", "fastmri", "images")
    assert names.KSPACE_SOURCES == {"synthetic": "simulated_from_phantoms", "fastmri": "measured",
                                    "images": "simulated_from_magnitude_images"}
    assert names.MASK_TYPES == ("equispaced_fraction", "equispaced", "random")
    assert names.POISON_TYPES == ("none", "lesion", "ghosting", "noise")
    assert names.TRAINING_PHASES == {"original": "federated", "oracle": "oracle"}
    assert (names.unlearn_phase("ft"), names.final_phase("zero_filled")) == ("unlearn/ft", "final/zero_filled")
    assert names.is_unlearn_phase("unlearn/ft") and not names.is_unlearn_phase("unlearning")
    # Plain strings: JSON and YAML hold them as they are.
    written = json.dumps({names.ORIGINAL: names.MASK_TYPES})
    assert written == '{"original": ["equispaced_fraction", "equispaced", "random"]}'
    for value in (names.ZERO_FILLED, names.SYNTHETIC, *names.MASK_TYPES, *names.POISON_TYPES):
        assert type(value) is str


@pytest.mark.parametrize(("make", "key", "choices"), [
    (lambda: DataConfig(mask_type="spiral"), "data.mask_type", names.MASK_TYPES),
    (lambda: DataConfig(kind="dicom"), "data.kind", names.DATA_KINDS),
    (lambda: PoisonConfig(kind="blur"), "poison.kind", names.POISON_TYPES),
])
def test_the_schema_refuses_an_unknown_name_listing_the_constants(make, key, choices) -> None:
    with pytest.raises(ValueError) as caught:
        make()
    assert key in str(caught.value)
    assert f"one of {choices}" in str(caught.value)


def test_hydra_takes_the_names_as_plain_strings_from_overrides() -> None:
    cfg = load_experiment("smoke", [f"data.mask_type={names.RANDOM}", f"poison.kind={names.GHOSTING}"])
    assert (cfg.data.mask_type, cfg.poison.kind, cfg.data.kind) == ("random", "ghosting", "synthetic")
    assert type(cfg.data.mask_type) is str


def _choices(command: str, option: str) -> tuple:
    _, commands = _parser()
    action = next(a for a in commands[command]._actions if option in a.option_strings)
    assert isinstance(action, argparse.Action)
    return tuple(action.choices)


def test_the_cli_offers_the_schemas_choices() -> None:
    assert _choices("evaluate", "--mask-type") == schema.MASK_TYPES
    assert _choices("evaluate", "--model") == tuple(schema.MODEL_PRESETS)
    assert _choices("evaluate", "--device") == schema.DEVICES


def test_the_mask_functions_cover_the_schemas_mask_types() -> None:
    from fedforget.recon import masks

    assert masks.MASK_TYPES is schema.MASK_TYPES
    assert tuple(masks._MASK_CLASSES) == schema.MASK_TYPES


def _module_assignments(path: Path) -> set[str]:
    assigned = set()
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    assigned.add(name.id)
    return assigned


def test_no_module_defines_its_own_copy_of_a_name() -> None:
    modules = [p for p in sorted([*PACKAGE.rglob("*.py"), *BENCH.rglob("*.py")])
               if p != PACKAGE / "configs" / "names.py"]
    copies = [f"{path.relative_to(PACKAGE.parent)} assigns {name}"
              for path in modules for name in sorted(_module_assignments(path) & set(DEFINED_ONCE))]
    assert not copies, "\n".join(copies)
