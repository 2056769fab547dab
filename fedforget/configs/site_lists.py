"""Site lists made at compose time: a generated list (``sites=generated``) and sites added on the
command line (``+sites.brain-9={anatomy:brain,seed:900}``).

Both end up as ordinary ``sites.<name>`` entries before the config is validated, so nothing
downstream knows how a site was declared. Site order is the order here: generated sites first
(brain, then knee), then added ones; a simulated node's ``partition-id`` indexes it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from fedforget.configs.schema import SYNTHETIC, GeneratedSitesConfig

SITE_ADDITION_PREFIXES = ("+sites.", "++sites.")


def generated_sites(spec: GeneratedSitesConfig, data_kind: str) -> dict[str, dict[str, Any]]:
    """The site entries ``spec`` describes, as plain dictionaries in ``sites.<name>`` form."""
    rng = random.Random(spec.seed)
    sites: dict[str, dict[str, Any]] = {}
    for anatomy, count in (("brain", spec.brain), ("knee", spec.knee)):
        train_from = test_from = 0
        for index in range(count):
            train = _training_volumes(spec, rng)
            entry: dict[str, Any] = {"anatomy": anatomy, "train_volumes": train, "test_volumes": spec.test_volumes,
                                     "seed": spec.seed + 10 * len(sites)}
            if data_kind != SYNTHETIC:
                entry.update(train_dir=getattr(spec, f"{anatomy}_train_dir"),
                             test_dir=getattr(spec, f"{anatomy}_test_dir"),
                             volumes_from=train_from, test_volumes_from=test_from)
            train_from, test_from = train_from + train, test_from + spec.test_volumes
            sites[f"{anatomy}-{index}"] = entry
    return sites


def _training_volumes(spec: GeneratedSitesConfig, rng: random.Random) -> int:
    if spec.split == "equal":
        return spec.train_volumes
    return max(1, round(spec.train_volumes * rng.lognormvariate(0.0, spec.skew)))


def split_site_additions(overrides: Sequence[str]) -> tuple[list[str], list[tuple[str, Any]]]:
    """Separate ``+sites.<name>={...}`` from the other overrides, parsed as (name, entry).

    OmegaConf cannot assign a new dict to a typed ``Dict[str, SiteConfig]`` value
    (``dict is not a subclass of SiteConfig``), so Hydra rejects the override; merging the same
    entry after composition works and is checked against ``SiteConfig`` like any other.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    rest, additions = [], []
    for text in overrides:
        key = text.split("=", 1)[0]
        name = key.split(".", 1)[1] if key.startswith(SITE_ADDITION_PREFIXES) else ""
        if not name:
            rest.append(text)
            continue
        if "." in name:
            site = name.split(".", 1)[0]
            raise ValueError(f"override {text!r} sets one field of a site that is not there yet: add the site whole, "
                             f"+sites.{site}={{anatomy:brain,train_volumes:2,test_volumes:1,seed:900}}, or set a "
                             f"field of an existing site without '+' (sites.brain-0.seed=5)")
        value = OverridesParser.create().parse_overrides([text])[0].value()
        if not isinstance(value, dict):
            raise ValueError(f"override {text!r} adds site {name!r} without its fields: expected "
                             f"+sites.{name}={{anatomy:brain,train_volumes:2,test_volumes:1,seed:900}}")
        additions.append((name, value))
    return rest, additions
