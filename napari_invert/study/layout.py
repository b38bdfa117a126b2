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
      <variant>/fold<k>/<arch>/segmenter_convergence.json   steps, stop reason, best Dice, verdict
      <variant>/fold<k>/<arch>/<tap>/decoder.{safetensors,json}, decoder_curve.csv
      <variant>/fold<k>/<arch>/<tap>/decoder_convergence.json
      <variant>/fold<k>/<arch>/<tap>/recon/<ID>.nii.gz          model grid
      <variant>/fold<k>/<arch>/<tap>/recon_native/<ID>.nii.gz   private subjects, on their native grid/affine
      <variant>/fold<k>/<arch>/membership/membership.json, membership_subjects.csv
      <variant>/fold<k>/<arch>/membership/shadows/shadow<k>.{safetensors,json}, shadow<k>_curve.csv
      <variant>/fold<k>/<arch>/<tap>/plugin/decoder.*, decoder_curve.csv, recon/<ID>.nii.gz
                                             trained in the napari plugin (not the study's)
      evaluation/                            written by ``napari-invert evaluate`` (:class:`EvaluationFolder`)
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

    @property
    def evaluation(self) -> EvaluationFolder:
        """Paths inside ``evaluation/`` (see :class:`EvaluationFolder`)."""
        return EvaluationFolder(self.evaluation_dir)

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

    def segmenter_convergence(self, variant: str, fold: int, arch: str) -> Path:
        """Convergence record of the victim (JSON beside its curve)."""
        return self.arch_dir(variant, fold, arch) / "segmenter_convergence.json"

    def decoder_convergence(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        """Convergence record of an inversion decoder (JSON beside its curve)."""
        return self.tap_dir(variant, fold, arch, tap) / "decoder_convergence.json"

    def convergence_records(self) -> list[Path]:
        """Every convergence record of the study (victims and decoders), sorted."""
        return sorted(self.root.glob("*/fold*/*/segmenter_convergence.json")) + sorted(
            self.root.glob("*/fold*/*/*/decoder_convergence.json")
        )

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

    # -- decoders trained in the napari plugin (never the study's own) -----------------
    def plugin_dir(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        """``<tap>/plugin/``: what the napari plugin trained; the runner never reads it."""
        return self.tap_dir(variant, fold, arch, tap) / "plugin"

    def plugin_decoder_stem(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        return self.plugin_dir(variant, fold, arch, tap) / "decoder"

    def plugin_decoder_curve(self, variant: str, fold: int, arch: str, tap: str) -> Path:
        return self.plugin_dir(variant, fold, arch, tap) / "decoder_curve.csv"

    def plugin_recon(self, variant: str, fold: int, arch: str, tap: str, subject_id: str) -> Path:
        return self.plugin_dir(variant, fold, arch, tap) / "recon" / f"{subject_id}.nii.gz"

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


#: Version of the ``evaluation/`` layout (``summary.json`` -> ``"layout"``). Version 1 (no
#: key) kept the similarity matrices, ``identification.csv`` and ``dice.csv`` loose in
#: ``evaluation/``; readers still find them there (:meth:`EvaluationFolder.legacy_similarity`).
EVALUATION_LAYOUT_VERSION = 2


@dataclass(frozen=True)
class EvaluationFolder:
    """Path arithmetic for ``STUDY/evaluation/`` (creates nothing by itself).

    ::

        evaluation/
          report.html  summary.json  metrics.csv        what people and readers open first
          tables/       table1|table2|table3|dice|native.{csv,md}, identification.csv,
                        dice_per_subject.csv
          figures/      *.png
          similarity/   <variant>_<arch>_<tap>_<metric>.{npy,json}   reconstruction x candidate
                        prior_<variant>_<metric>.{npy,json}         fold prior x candidate
          native/       scores.csv: true pairs scored on each subject's native grid
          controls/     controls.json, ...; membership/  <variant>_<arch>.json (their own modules)
          deformation/  <variant>_<arch>_<tap>/<ID>.nii.gz (|u| mm of true pairs), cache/
          cache/        deformation/...: maps the napari plugin computed on demand
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- entry points ------------------------------------------------------------------
    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    # -- tables and figures ------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    def table(self, name: str, ext: str) -> Path:
        """``tables/<name>.<ext>`` (``ext`` without the dot: ``csv``, ``md``)."""
        return self.tables_dir / f"{name}.{ext}"

    @property
    def identification_csv(self) -> Path:
        return self.table("identification", "csv")

    @property
    def dice_csv(self) -> Path:
        """Per-subject Dice rows (``tables/dice.csv`` is the summary table)."""
        return self.tables_dir / "dice_per_subject.csv"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    def figure(self, name: str) -> Path:
        """``figures/<name>.png``."""
        return self.figures_dir / f"{name}.png"

    # -- similarity matrices -------------------------------------------------------------
    @property
    def similarity_dir(self) -> Path:
        return self.root / "similarity"

    def similarity(self, variant: str, arch: str, tap: str, metric: str) -> Path:
        """``.npy`` of an experiment's matrix (its ``.json`` of subject ids lies beside it)."""
        return self.similarity_dir / f"{variant}_{arch}_{tap_slug(tap)}_{metric}.npy"

    def prior_similarity(self, variant: str, metric: str) -> Path:
        """``.npy`` of the fold priors x candidates matrix (``.json`` beside it)."""
        return self.similarity_dir / f"prior_{variant}_{metric}.npy"

    @property
    def similarity_blocks_dir(self) -> Path:
        """Row blocks of the matrices computed as units on an executor (``evaluate --backend
        ray``): their inputs and results, reused when an interrupted evaluation is rerun."""
        return self.similarity_dir / "blocks"

    def legacy_similarity(self, variant: str, arch: str, tap: str, metric: str) -> list[Path]:
        """Where layout version 1 kept the matrix (loose in ``evaluation/``; read-only)."""
        names = dict.fromkeys((tap_slug(tap), tap))
        return [self.root / f"similarity_{variant}_{arch}_{t}_{metric}.npy" for t in names]

    def legacy_files(self) -> list[Path]:
        """Loose files of layout version 1 that a new evaluation replaces."""
        if not self.root.is_dir():
            return []
        out = [*self.root.glob("similarity_*.npy"), *self.root.glob("similarity_*.json")]
        out += [*self.root.glob("prior_*.npy"), *self.root.glob("prior_*.json")]
        out += [p for p in (self.root / "identification.csv", self.root / "dice.csv") if p.is_file()]
        return sorted(out)

    # -- controls and membership (written by their own modules) ---------------------------
    @property
    def controls_json(self) -> Path:
        """``controls/controls.json`` (:mod:`napari_invert.report.controls`)."""
        return self.root / "controls" / "controls.json"

    # -- native grid -------------------------------------------------------------------
    @property
    def native_dir(self) -> Path:
        return self.root / "native"

    @property
    def native_scores_csv(self) -> Path:
        return self.native_dir / "scores.csv"

    # -- deformation -------------------------------------------------------------------
    @property
    def deformation_dir(self) -> Path:
        return self.root / "deformation"

    @property
    def deformation_cache_dir(self) -> Path:
        """Registrations already computed by ``evaluate`` (content-keyed)."""
        return self.deformation_dir / "cache"

    def deformation_maps_dir(self, variant: str, arch: str, tap: str) -> Path:
        return self.deformation_dir / f"{variant}_{arch}_{tap_slug(tap)}"

    def deformation_map(self, variant: str, arch: str, tap: str, subject_id: str) -> Path:
        """|u| (mm, model grid) of a true pair registered by ``evaluate``."""
        return self.deformation_maps_dir(variant, arch, tap) / f"{subject_id}.nii.gz"

    @property
    def gui_cache_dir(self) -> Path:
        """What the napari plugin computed on demand (``cache/deformation/...``)."""
        return self.root / "cache"

    def gui_deformation_cache(
        self, variant: str, arch: str, tap: str, recon_subject: str, ref_subject: str | None = None
    ) -> Path:
        """Where the napari plugin caches |u| (mm) of ``recon`` -> original ``ref``."""
        name = f"{variant}_{arch}_{tap_slug(tap)}_{recon_subject}"
        if ref_subject is not None and ref_subject != recon_subject:
            name += f"_vs_{ref_subject}"
        return self.gui_cache_dir / "deformation" / f"{name}.nii.gz"
