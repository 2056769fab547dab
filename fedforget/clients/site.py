"""Which site a node is, and its data and model kept alive between messages.

A simulated node knows only its ``partition-id``: it is the N-th site of the
experiment. A deployed node names its site and data folder in ``--node-config
'site="knee-0" data-path="/data/knee"'``. Either way the node builds one
:class:`SiteRuntime` per process and reuses it, so no model is rebuilt and no
file is re-read per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from torch import nn

from fedforget.configs.compose import fingerprint
from fedforget.configs.schema import FORGET, IMAGES, RETAIN, SYNTHETIC, ExperimentConfig
from fedforget.data.batches import BatchSource, stream_seed, unlearning_source
from fedforget.data.datasets import CachedSliceDataset, PoisonedTargets, SliceSubset
from fedforget.data.image_sites import prepare_image_sites, source_digests
from fedforget.data.sites import (
    SPLITS,
    kspace_source,
    marked_slices,
    open_site_split,
    poison_manifest_sha256,
    site_folders,
    site_split,
)
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.audits import artifact_scorer
from fedforget.learning.checkpoints import state_sha256
from fedforget.learning.evaluation import Evaluation, Reconstructor, evaluate_reconstructions
from fedforget.learning.training import LocalTraining, model_from_config, pick_device, reconstruct
from fedforget.recon.losses import ReconLoss
from fedforget.recon.poison import PoisonManifest, load_manifest
from fedforget.strategies.protocol import SiteError, state_from_arrays
from fedforget.unlearning.base import Method, TermContext, frozen_copy

# Membership's held-out slices (see SiteRuntime.evaluation_split); never a split of results.json.
HELDOUT = "heldout"


@dataclass(frozen=True)
class SiteIdentity:
    """A node's site name and the folders of its splits."""

    name: str
    folders: dict[str, Path]


def resolve_site(node_config: dict[str, Any], cfg: ExperimentConfig) -> SiteIdentity:
    """Map a node to a site of the experiment.

    Raises:
        SiteError: the node names a site that is not in the experiment, or a
            partition id beyond the number of sites.
    """
    if "site" in node_config:
        name = str(node_config["site"])
        if name not in cfg.sites:
            raise SiteError(name, f"node config site={name!r} is not a site of experiment {cfg.name!r}: "
                                  f"expected one of {cfg.site_names}")
        data_path = node_config.get("data-path")
        if not data_path:
            raise SiteError(name, 'node config lacks data-path: start the SuperNode with '
                                  '--node-config \'site="NAME" data-path="/abs/folder"\'')
        return SiteIdentity(name, site_folders(cfg, name, Path(str(data_path))))
    if "partition-id" in node_config:
        index = int(node_config["partition-id"])
        _check_supernode_count(int(node_config.get("num-partitions", len(cfg.site_names))), index, cfg)
        name = cfg.site_names[index]
        return SiteIdentity(name, site_folders(cfg, name))
    raise SiteError("unknown", "node config has neither 'site' (deployment) nor 'partition-id' (simulation)")


def _check_supernode_count(nodes: int, index: int, cfg: ExperimentConfig) -> None:
    """A simulation needs one SuperNode per site (Flower's local federation starts 2 unless told otherwise)."""
    sites = len(cfg.site_names)
    if nodes != sites or not 0 <= index < sites:
        raise SiteError(f"partition-{index}", supernode_count_advice(nodes, cfg))


def supernode_count_advice(nodes: int, cfg: ExperimentConfig) -> str:
    """What to type when a simulation's SuperNode count differs from the experiment's sites."""
    sites = len(cfg.site_names)
    return (f"the simulation has {nodes} SuperNodes but experiment {cfg.name!r} has {sites} sites "
            f"({', '.join(cfg.site_names[:6])}{', ...' if sites > 6 else ''}): one SuperNode per site is needed. "
            f"Run `flwr run . --federation-config \"num-supernodes={sites}\"`, or set it for every run with "
            f"`flwr federation simulation-config --num-supernodes {sites}` (or use `fedforget run`, which sizes "
            f"the simulation itself)")


class SiteRuntime:
    """One site's model, loss and datasets inside one process."""

    def __init__(self, cfg: ExperimentConfig, identity: SiteIdentity, simulated: bool) -> None:
        self.cfg = cfg
        self.identity = identity
        self.simulated = simulated
        self.device = pick_device(cfg.federation.device)
        if simulated and self.device.type == "cpu":
            # Each simulated node owns client_cpus cores; more threads only fight the other nodes.
            torch.set_num_threads(max(1, int(cfg.federation.client_cpus)))
        self.model = model_from_config(cfg.model)
        self.model.to(self.device)
        self.loss = ReconLoss(cfg.federation.l1_weight)
        self._splits: dict[str, CachedSliceDataset] = {}
        self._reference_model: nn.Module | None = None
        self._reference_scores: dict[tuple[str, str], Evaluation] = {}
        self._contexts: dict[tuple[str, str], TermContext] = {}

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def is_forget_site(self) -> bool:
        return self.name == self.cfg.unlearning.forget_site

    def split(self, name: str) -> CachedSliceDataset:
        """A split, validated and opened on first use (DataFileError names the bad file)."""
        if name not in self._splits:
            dataset = open_site_split(self.cfg, self.name, name, self.identity.folders[name])
            if len(dataset) == 0:
                raise SiteError(self.name, f"{self.identity.folders[name]} holds no slices")
            self._splits[name] = dataset
        return self._splits[name]

    @property
    def holds_poisoned_forget_set(self) -> bool:
        """This is the forget site of a poisoned federation (its forget set is its known-poisoned slices)."""
        return self.is_forget_site and self.cfg.is_poisoned(self.name)

    def evaluation_split(self, name: str) -> CachedSliceDataset | SliceSubset | PoisonedTargets:
        """What a split name means when scoring.

        ``train`` at the forget site is the forget set the request names (all its training slices,
        or the known-poisoned ones at a poisoned site); ``heldout`` is what membership compares it
        with: the test split, with the poison written into its targets at a poisoned site.
        """
        poisoned = self.holds_poisoned_forget_set
        if name == "train" and poisoned:
            return SliceSubset(self.split("train"), self._training_slices("known"))
        if name == HELDOUT:
            poison = self.cfg.poison
            return PoisonedTargets(self.split("test"), poison.kind, poison.strength, poison.seed) if poisoned \
                else self.split("test")
        return self.split(name)

    def score(self, reconstructor: Reconstructor, split: str) -> Evaluation:
        """Scores of a reconstructor on a split (fastMRI metrics per volume, per-slice losses, artifact score)."""
        return evaluate_reconstructions(reconstructor, self.evaluation_split(split), self.loss, self.device,
                                        self.cfg.federation.batch_size, artifact_scorer(self.cfg.poison, split))

    def reference_score(self, arrays: ArrayRecord, split: str) -> Evaluation:
        """The reference model's scores on a split, computed once per process for each reference."""
        state = state_from_arrays(arrays)
        key = (state_sha256(state), split)
        if key not in self._reference_scores:
            if self._reference_model is None:
                self._reference_model = model_from_config(self.cfg.model).to(self.device)
            self._reference_model.load_state_dict(state)
            self._reference_model.eval()
            self._reference_scores[key] = self.score(lambda batch: reconstruct(self._reference_model, batch), split)
        return self._reference_scores[key]

    def training_in_round(self, server_round: int) -> LocalTraining:
        """Local training settings of one FedAvg round (the learning rate follows the schedule)."""
        return LocalTraining.of(self.cfg.federation, server_round)

    def training_at(self, lr: float) -> LocalTraining:
        """Local training settings at a learning rate the server chose (a history-based method's round)."""
        fed = self.cfg.federation
        return LocalTraining(lr, fed.grad_clip, fed.bf16)

    def data_description(self) -> dict[str, Any]:
        """The files this site uses per split (name, bytes, SHA-256), its volume ranges, its poison manifest,
        and what its k-space is (``kspace_source``: measured, or simulated from phantoms or magnitude images).

        Computed here because in a deployment only the site can read its files; the server
        records it in audit.json and keys its model cache with it.
        """
        description: dict[str, Any] = {split: site_split(self.cfg, self.name, split,
                                                         self.identity.folders[split]).describe()
                                       for split in SPLITS}
        description["poison_manifest_sha256"] = poison_manifest_sha256(self.identity.folders["train"])
        description["kspace_source"] = kspace_source(self.cfg)
        if self.cfg.data.kind == IMAGES:  # the real subjects behind the simulated files
            for split in SPLITS:
                description[split]["source_sha256"] = source_digests(self.identity.folders[split])
        return description

    @property
    def read_seconds(self) -> float:
        """Seconds this process spent reading the site's slices from their files."""
        return sum(split.read_seconds for split in self._splits.values())

    def load(self, arrays: ArrayRecord) -> nn.Module:
        """The site's model holding the received weights."""
        self.model.load_state_dict(state_from_arrays(arrays))
        return self.model

    def term_context(self, method: Method, role: str, original: ArrayRecord | None) -> TermContext:
        """What ``role`` needs for ``method``'s terms, built once per method in this process.

        The method's helpers (bad teacher's random teacher) are built from the seed alone,
        so a deployed site, which starts a new process per message, builds the same ones
        as a simulated site and as the Flower-free run. ``original`` (the model the
        server sends for distillation) is loaded into it on every message.
        """
        key = (method.name, role)
        if key not in self._contexts:
            ctx = TermContext(loss=self.loss, seed=self.cfg.seed)
            method.prepare(role, ctx, self.model)
            self._contexts[key] = ctx
        ctx = self._contexts[key]
        if original is not None:
            if ctx.original is None:
                ctx.original = frozen_copy(self.model)
            ctx.original.load_state_dict(state_from_arrays(original))
        return ctx

    @property
    def manifest(self) -> PoisonManifest:
        """Which training slices are poisoned and which of those are known (poisoned site only)."""
        site_dir = self.identity.folders["train"].parent
        manifest = load_manifest(site_dir)
        if manifest is None:
            raise SiteError(self.name, f"poison.kind={self.cfg.poison.kind} names this site as poisoned, but "
                                       f"{site_dir} has no poison.json (prepare the data with fedforget run/synth)")
        return manifest

    def _training_slices(self, keep: str) -> list[int]:
        """Training slice indices that are clean (``keep="clean"``) or known-poisoned (``"known"``)."""
        chosen = marked_slices(self.split("train"), self.manifest, keep)
        if not chosen:
            raise SiteError(self.name, f"no {keep} training slices at the poisoned site")
        return chosen

    def train_source(self, exclude_poisoned: bool = False) -> BatchSource:
        """The FedAvg training stream; the oracle of a poisoned federation leaves poisoned slices out."""
        seed = stream_seed(self.cfg.seed, self.name, "train")
        indices = self._training_slices("clean") if exclude_poisoned and self.cfg.is_poisoned(self.name) else None
        return BatchSource(self.split("train"), self.cfg.federation.batch_size, seed, indices)

    def training_examples(self, exclude_poisoned: bool = False) -> int:
        return len(self.train_source(exclude_poisoned))

    def forget_source(self) -> BatchSource:
        """The data this site unlearns: all its training slices, or the known poisoned ones."""
        if not self.is_forget_site:
            raise SiteError(self.name, f"asked for forget data, but the forget site is "
                                       f"{self.cfg.unlearning.forget_site}")
        known = self._training_slices("known") if self.cfg.is_poisoned(self.name) else None
        return unlearning_source(self.cfg, self.name, self.split("train"), role=FORGET, indices=known)

    def retain_source(self) -> BatchSource:
        """The retain fraction of this site's training slices (never available at the forget site)."""
        if self.is_forget_site:
            raise SiteError(self.name, "asked for retain data, but this is the forget site")
        return unlearning_source(self.cfg, self.name, self.split("train"), role=RETAIN)


_RUNTIMES: dict[tuple[str, str], SiteRuntime] = {}


def runtime_for(cfg: ExperimentConfig, node_config: dict[str, Any]) -> SiteRuntime:
    """This process's runtime for the node's site (built once, then reused)."""
    identity = resolve_site(node_config, cfg)
    key = (fingerprint({"cfg": repr(cfg), "folders": {k: str(v) for k, v in identity.folders.items()}}),
           identity.name)
    if key not in _RUNTIMES:
        if cfg.data.kind == SYNTHETIC and "partition-id" in node_config:
            # A simulated site on another machine of a Ray cluster writes its own phantoms (deterministic).
            prepare_synthetic_data(cfg, names=[identity.name])
        elif cfg.data.kind == IMAGES and "partition-id" in node_config:
            # The same for an image site whose source images that machine holds (found written elsewhere).
            prepare_image_sites(cfg, names=[identity.name])
        _RUNTIMES[key] = SiteRuntime(cfg, identity, simulated="partition-id" in node_config)
    return _RUNTIMES[key]
