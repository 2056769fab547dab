"""TensorBoard layout: ``tensorboard/<site>/`` per site plus ``tensorboard/server/``; tags ``<phase>/<metric>``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

SERVER = "server"


class Boards:
    """One event writer per site (and one for the server)."""

    def __init__(self, root: Path, sites: Iterable[str]) -> None:
        self.writers = {name: SummaryWriter(log_dir=str(root / name)) for name in [*sites, SERVER]}

    def site_metrics(self, phase: str, step: int, per_site: Mapping[str, Mapping[str, float]]) -> None:
        """Write ``<phase>/<metric>`` for every site's metrics at ``step``."""
        for site, metrics in per_site.items():
            for metric, value in metrics.items():
                self.writers[site].add_scalar(f"{phase}/{metric}", value, step)

    def server_metric(self, tag: str, value: float, step: int) -> None:
        self.writers[SERVER].add_scalar(tag, value, step)

    def text(self, site: str, tag: str, text: str, step: int) -> None:
        self.writers[site].add_text(tag, text, step)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
