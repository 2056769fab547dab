"""The federation a run talks to: its experiment, the sites that answered discovery, the link to them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flwr.serverapp import Grid
from torch import nn

from fedforget.configs.schema import ExperimentConfig
from fedforget.learning.training import model_from_config
from fedforget.strategies.directory import SiteInfo, discover_sites
from fedforget.strategies.link import Ledger, SiteLink

SIMULATION = "simulation"
DEPLOYMENT = "deployment"


@dataclass(frozen=True)
class Federation:
    """What every phase reads and none changes (what they produce, they return)."""

    cfg: ExperimentConfig
    sites: dict[str, SiteInfo]
    link: SiteLink
    cache_dir: Path | None  # the model cache (original / oracle by fingerprint), None: no cache

    @property
    def forget_site(self) -> str:
        return self.cfg.unlearning.forget_site

    @property
    def mode(self) -> str:
        """``simulation`` when every site runs in Flower's simulation engine, else ``deployment``."""
        return SIMULATION if all(info.simulated for info in self.sites.values()) else DEPLOYMENT

    def new_model(self) -> nn.Module:
        return model_from_config(self.cfg.model)


def connect(grid: Grid, cfg: ExperimentConfig) -> Federation:
    """Find every configured site among the connected nodes (each must answer exactly once)."""
    timeout, ledger = cfg.federation.timeout_s, Ledger()
    sites = discover_sites(grid, cfg, timeout, ledger)
    link = SiteLink(grid, {name: info.node_id for name, info in sites.items()}, ledger, timeout)
    return Federation(cfg, sites, link, Path(cfg.cache_dir) if cfg.cache_dir else None)
