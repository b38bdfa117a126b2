"""The on-disk layout of a study folder: the contract between the study runner, the
evaluation/report code and the napari widgets.

::

    STUDY/
      config.yaml                     resolved StudyConfig (YAML)
      splits.json                     {"seed", "folds": [{"fold", "private", "attack"}]}
      cohort.json                     {"subject_ids", "variants", "label_table", "affine", "shape"}
      manifest.json                   finished steps: {step_key: {"finished": iso-time, ...}}
      data/<variant>/originals/<ID>.nii.gz   preprocessed original on the model grid (float32)
      data/<variant>/masks/<ID>.nii.gz       brain mask on the model grid (uint8 0/1)
      data/<variant>/labels/<ID>.nii.gz      contiguous class labels on the model grid (uint8/16)
      <variant>/fold<k>/prior.nii.gz         attacker's mean image (its own attack set only)
      <variant>/fold<k>/<arch>/segmenter.{safetensors,json}, segmenter_curve.csv
      <variant>/fold<k>/<arch>/<tap>/decoder.{safetensors,json}, decoder_curve.csv
      <variant>/fold<k>/<arch>/<tap>/recon/<ID>.nii.gz          model grid
      <variant>/fold<k>/<arch>/<tap>/recon_native/<ID>.nii.gz   private subjects, on their native grid/affine
      <variant>/fold<k>/<arch>/membership/membership.json, membership_subjects.csv
      <variant>/fold<k>/<arch>/membership/shadows/shadow<k>.{safetensors,json}, shadow<k>_curve.csv
      evaluation/                            written by ``napari-invert evaluate``
      defences/<variant>/fold<k>/<arch>@<defence>/segmenter.*, exposed/decoder.*, exposed/recon/,
                                             result.json   (napari_invert.defences)

``<tap>`` is the tap name with ``+`` replaced by ``_`` (``bottleneck_skips``).
All paths are produced by :class:`StudyFolder`; nothing else should build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_invert._io import read_json, write_json_atomic


def tap_slug(tap: str) -> str:
    """File-system name of a tap option (``bottleneck+skips`` -> ``bottleneck_skips``)."""
    return tap.replace("+", "_")


def tap_from_slug(slug: str) -> str:
    """Inverse of :func:`tap_slug`."""
    return slug.replace("_", "+")


@dataclass(frozen=True)
class StudyFolder:
    """Path arithmetic for one study folder (creates nothing by itself)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- top level -------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits_path(self) -> Path:
        return self.root / "splits.json"

    @property
    def cohort_path(self) -> Path:
        return self.root / "cohort.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    # -- preprocessed data -----------------------------------------------------------
    def original(self, variant: str, subject_id: str) -> Path:
        return self.root / "data" / variant / "originals" / f"{subject_id}.nii.gz"

    def mask(self, variant: str, subject_id: str) -> Path:
        return self.root / "data" / variant / "masks" / f"{subject_id}.nii.gz"

    def labels(self, variant: str, subject_id: str) -> Path:
        return self.root / "data" / variant / "labels" / f"{subject_id}.nii.gz"

    # -- per fold ----------------------------------------------------------------------
    def fold_dir(self, variant: str, fold: int) -> Path:
        return self.root / variant / f"fold{fold}"

    def prior(self, variant: str, fold: int) -> Path:
        return self.fold_dir(variant, fold) / "prior.nii.gz"

    def arch_dir(self, variant: str, fold: int, arch: str) -> Path:
        return self.fold_dir(variant, fold) / arch

    def segmenter_stem(self, variant: str, fold: int, arch: str) -> Path:
        return self.arch_dir(variant, fold, arch) / "segmenter"

    def segmenter_curve(self, variant: str, fold: int, arch: str) -> Path:
        return self.arch_dir(variant, fold, arch) / "segmenter_curve.csv"

    def tap_dir(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        return self.arch_dir(variant, fold, arch) / tap_slug(tap)

    def decoder_stem(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        return self.tap_dir(variant, fold, arch, tap) / "decoder"

    def decoder_curve(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        return self.tap_dir(variant, fold, arch, tap) / "decoder_curve.csv"

    def recon(self, variant: str, fold: int, arch: str, tap: str, subject_id: str) -> Path:
        return self.tap_dir(variant, fold, arch, tap) / "recon" / f"{subject_id}.nii.gz"

    def recon_native(self, variant: str, fold: int, arch: str, tap: str, subject_id: str) -> Path:
        return self.tap_dir(variant, fold, arch, tap) / "recon_native" / f"{subject_id}.nii.gz"

    # -- defended victims (napari_invert.defences; kept apart from the study's experiments) --
    @property
    def defences_dir(self) -> Path:
        """``STUDY/defences/``: every defended victim, its attacker and its measured point."""
        return self.root / "defences"

    def defended_dir(self, variant: str, fold: int, arch: str, defence: str) -> Path:
        """``defences/<variant>/fold<k>/<arch>@<defence>/`` (``defence``: a slug such as
        ``noise-0.5``; ``none`` is the undefended reference trained the same way)."""
        return self.defences_dir / variant / f"fold{fold}" / f"{arch}@{defence}"

    def defended_segmenter_stem(self, variant: str, fold: int, arch: str, defence: str) -> Path:
        return self.defended_dir(variant, fold, arch, defence) / "segmenter"

    def defended_segmenter_curve(self, variant: str, fold: int, arch: str, defence: str) -> Path:
        return self.defended_dir(variant, fold, arch, defence) / "segmenter_curve.csv"

    def defended_decoder_stem(self, variant: str, fold: int, arch: str, defence: str) -> Path:
        """The attacker's decoder, retrained from scratch against the defended victim."""
        return self.defended_dir(variant, fold, arch, defence) / "exposed" / "decoder"

    def defended_decoder_curve(self, variant: str, fold: int, arch: str, defence: str) -> Path:
        return self.defended_dir(variant, fold, arch, defence) / "exposed" / "decoder_curve.csv"

    def defended_recon(self, variant: str, fold: int, arch: str, defence: str, subject_id: str) -> Path:
        return self.defended_dir(variant, fold, arch, defence) / "exposed" / "recon" / f"{subject_id}.nii.gz"

    def defended_result(self, variant: str, fold: int, arch: str, defence: str) -> Path:
        """Per-subject measurements of one defended victim in one fold (JSON)."""
        return self.defended_dir(variant, fold, arch, defence) / "result.json"

    def defended_results(self) -> list[Path]:
        """Every ``result.json`` under ``defences/``, sorted."""
        return sorted(self.defences_dir.glob("*/fold*/*@*/result.json"))

    @property
    def frontier_dir(self) -> Path:
        """``evaluation/frontier/``: table, figures and report section of the frontier."""
        return self.evaluation_dir / "frontier"

    # -- membership inference (threat model "training-data leakage") -------------------
    def membership_dir(self, variant: str, fold: int, arch: str) -> Path:
        return self.arch_dir(variant, fold, arch) / "membership"

    def membership_json(self, variant: str, fold: int, arch: str) -> Path:
        return self.membership_dir(variant, fold, arch) / "membership.json"

    def membership_csv(self, variant: str, fold: int, arch: str) -> Path:
        return self.membership_dir(variant, fold, arch) / "membership_subjects.csv"

    def shadow_stem(self, variant: str, fold: int, arch: str, k: int) -> Path:
        """Shadow segmenter ``k`` (trained by the attacker on half of its own subjects)."""
        return self.membership_dir(variant, fold, arch) / "shadows" / f"shadow{k}"

    def shadow_curve(self, variant: str, fold: int, arch: str, k: int) -> Path:
        return self.membership_dir(variant, fold, arch) / "shadows" / f"shadow{k}_curve.csv"

    def membership_pooled_json(self, variant: str, arch: str) -> Path:
        """Membership results of all folds of one architecture, pooled."""
        return self.evaluation_dir / "membership" / f"{variant}_{arch}.json"

    # -- json documents ----------------------------------------------------------------
    def read_splits(self) -> dict[str, Any]:
        return read_json(self.splits_path)

    def read_cohort(self) -> dict[str, Any]:
        return read_json(self.cohort_path)

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"steps": {}}
        return read_json(self.manifest_path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def is_study(self) -> bool:
        """True when the folder has the files every study starts with."""
        return self.config_path.is_file() and self.splits_path.is_file() and self.cohort_path.is_file()

    def private_fold_of(self, subject_id: str) -> int:
        """The fold in which ``subject_id`` is private (its reconstruction counts)."""
        for fold in self.read_splits()["folds"]:
            if subject_id in fold["private"]:
                return int(fold["fold"])
        raise KeyError(f"{subject_id} is private in no fold of {self.splits_path}")
