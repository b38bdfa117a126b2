"""The privacy-utility frontier: one point per defence and strength, with intervals.

:func:`collect_points` pools the per-subject measurements of every ``result.json`` of one
or more study folders over folds, per (study, variant, architecture, defence):

* ``dice``: utility, mean Dice on unseen subjects, 95 % percentile-bootstrap interval;
* ``dice_cost``: the reference's Dice minus this point's, paired per unseen subject (the
  reference ``none`` and every defence are scored on the same subjects of the same folds),
  bootstrap over subjects (:func:`~napari_invert.identify.paired.paired_difference_interval`);
* ``reid_top1`` (feature inversion): re-identified members / members, Clopper-Pearson
  95 % interval, chance ``1/M`` and the binomial p-value of doing that well by guessing;
* ``ssim_gain`` (feature inversion): SSIM of the reconstruction minus SSIM of the prior,
  against the true original; bootstrap interval;
* ``member_gap`` (feature inversion, only with held-out subjects): member minus non-member
  SSIM gain (:func:`~napari_invert.identify.intervals.difference_interval`);
* ``mia_auc`` (training-data leakage): membership-inference ROC AUC, averaged over folds,
  stratified bootstrap interval (0.5 = chance);
* ``trivial_dice`` (the utility's control): the Dice of a segmenter that ignores the image,
  the majority label of each fold's members' labels at every voxel
  (:func:`~napari_invert.metrics.majority_baseline_dice`), on the same unseen subjects as
  ``dice``. A defended victim below it segments worse than that map.

Every interval comes from :mod:`napari_invert.identify.intervals` / :mod:`~napari_invert.identify.paired`
(one implementation of the bootstrap in the package); this module only pools and labels.

:func:`pareto_front` marks the non-dominated points (higher utility, lower leakage).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert.defences.result import read_result
from napari_invert.errors import DataError
from napari_invert.identify import intervals
from napari_invert.identify.paired import paired_difference_interval
from napari_invert.study.layout import StudyFolder
from napari_invert.threat_models import ARCH_NAMES

#: resamples of every bootstrap interval
N_BOOT = 2000
#: a re-identification rate is "at chance" when guessing does as well with p >= this
CHANCE_ALPHA = 0.05
#: the Dice cost the verdict allows
MAX_DICE_COST = 0.02
#: below this reference Dice the verdict warns that the victim barely segments
LOW_UTILITY = 0.1

ARCH_LABELS = ARCH_NAMES  # display names of the architectures

#: privacy measures on the frontier: (attribute, axis label, threat model, chance value)
MEASURES: tuple[tuple[str, str, str], ...] = (
    ("reid_top1", "re-identification top-1 rate", "feature inversion"),
    ("ssim_gain", "SSIM gain over the prior", "feature inversion"),
    ("mia_auc", "membership-inference AUC", "training-data leakage"),
)


@dataclass
class Estimate:
    """A value with its 95 % interval ``[lo, hi]`` and the number ``n`` it rests on."""

    value: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 3) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def _nan() -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), 0)


def _finite(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def bootstrap_mean(values: Sequence[float], seed: int = 0) -> Estimate:
    """Mean and 95 % percentile-bootstrap interval of ``values`` (NaNs dropped)."""
    v = _finite(values)
    if v.size == 0:
        return _nan()
    if v.size == 1:
        return Estimate(float(v[0]), float(v[0]), float(v[0]), 1)
    lo, hi = intervals.mean_interval(v, n_boot=N_BOOT, seed=seed)
    return Estimate(float(v.mean()), lo, hi, int(v.size))


def paired_cost(reference: Sequence[float], defended: Sequence[float]) -> Estimate:
    """Mean of ``reference - defended`` over subjects measured under both, bootstrap over
    subjects (pairs with a NaN are dropped)."""
    a, b = np.asarray(reference, dtype=float), np.asarray(defended, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.any():
        return _nan()
    if keep.sum() == 1:
        return bootstrap_mean(a[keep] - b[keep])
    d = paired_difference_interval(a[keep], b[keep], n_boot=N_BOOT)
    return Estimate(d.difference, d.ci[0], d.ci[1], d.n_a)


def group_gap(a: Sequence[float], b: Sequence[float], seed: int = 1) -> Estimate:
    """``mean(a) - mean(b)`` of two independent groups, each resampled on its own."""
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return _nan()
    d = intervals.difference_interval(x, y, n_boot=N_BOOT, seed=seed)
    return Estimate(d.difference, d.ci[0], d.ci[1], int(x.size + y.size))


def clopper_pearson(k: int, n: int) -> Estimate:
    """Rate ``k/n`` with its exact (Clopper-Pearson) 95 % interval."""
    if n == 0:
        return _nan()
    lo, hi = intervals.clopper_pearson(k, n)
    return Estimate(k / n, lo, hi, n)


def binomial_p(k: int, n: int, p: float) -> float:
    """P(X >= k), X ~ Binomial(n, p): how often guessing re-identifies at least ``k``."""
    return intervals.binomial_sf(k, n, p)


def fold_auc(folds: Sequence[tuple[Sequence[float], Sequence[float]]], seed: int = 0) -> Estimate:
    """Mean over folds of the AUC of (member, non-member) scores, stratified bootstrap
    (each fold resampled within its own groups; NaN scores dropped)."""
    pairs = [(_finite(m), _finite(n)) for m, n in folds]
    pairs = [(m, n) for m, n in pairs if m.size and n.size]
    if not pairs:
        return _nan()
    value = float(np.mean([intervals.roc_auc(m, n) for m, n in pairs]))
    boots = np.mean(
        [intervals.auc_bootstrap(m, n, N_BOOT, seed + i) for i, (m, n) in enumerate(pairs)], axis=0
    )
    lo, hi = intervals.percentile_interval(boots)
    return Estimate(value, lo, hi, int(sum(m.size + n.size for m, n in pairs)))


@dataclass
class FrontierPoint:
    """One defended victim (or the reference), pooled over the folds that were run."""

    study: str
    variant: str
    arch: str
    defence: str
    kind: str
    strength: float
    label: str
    threat_model: str
    folds: list[int]
    dice: Estimate
    dice_cost: Estimate
    reid_top1: Estimate
    reid_hits: int
    chance_top1: float
    p_value_top1: float
    ssim_gain: Estimate
    member_gap: Estimate
    mia_auc: Estimate
    mia_attack: str
    epsilon: float | None = None
    delta: float | None = None
    front: dict[str, bool] = field(default_factory=dict)
    trivial_dice: Estimate = field(default_factory=lambda: _nan())

    @property
    def below_trivial(self) -> bool:
        """Mean Dice below the majority-label map's on the same subjects (False when unknown)."""
        return math.isfinite(self.trivial_dice.value) and self.dice.value < self.trivial_dice.value

    @property
    def is_reference(self) -> bool:
        return self.kind == "none"

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.study, self.variant, self.arch)

    @property
    def reid_at_chance(self) -> bool:
        """Re-identification not distinguishable from guessing (binomial p >= 0.05)."""
        return self.p_value_top1 >= CHANCE_ALPHA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _results_of(study: Path) -> list[dict[str, Any]]:
    folder = StudyFolder(Path(study))
    paths = folder.defended_results()
    if not paths:
        raise DataError(folder.defences_dir, "no defended experiments (result.json) found; run them first")
    return [read_result(p) for p in paths]


def collect_points(studies: Sequence[str | Path]) -> list[FrontierPoint]:
    """Every frontier point of the given study folders (see the module docstring)."""
    points: list[FrontierPoint] = []
    for study in studies:
        grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in _results_of(Path(study)):
            grouped[(r["variant"], r["arch"], r["defence"]["slug"])].append(r)
        name = Path(study).name
        trivial = _TrivialDice(Path(study))
        for (variant, arch, slug), rows in sorted(grouped.items()):
            rows = sorted(rows, key=lambda r: r["fold"])
            ref = {r["fold"]: r for r in grouped.get((variant, arch, "none"), [])}
            point = _point(name, variant, arch, slug, rows, ref)
            point.trivial_dice = bootstrap_mean([v for r in rows for v in trivial(variant, r)])
            points.append(point)
    for key in {p.group for p in points}:
        group = [p for p in points if p.group == key]
        for attr, _, _ in MEASURES:
            util = np.array([p.dice.value for p in group])
            leak = np.array([getattr(p, attr).value for p in group])
            for p, on in zip(group, pareto_front(util, leak)):
                p.front[attr] = bool(on)
    return points


class _TrivialDice:
    """Per-subject Dice of the majority-label map of a fold's members, on that fold's utility
    subjects (:meth:`~napari_invert.study.results.StudyResults.majority_baseline_dice`), cached
    per (variant, members, subjects): every defence of a fold shares them."""

    def __init__(self, study: Path) -> None:
        from napari_invert.study.results import StudyResults

        self.results = StudyResults(study)
        self.cache: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[float]] = {}

    def __call__(self, variant: str, result: dict[str, Any]) -> list[float]:
        """One value per utility subject of ``result`` (empty when a label map is missing)."""
        members = tuple(result.get("training_data_leakage", {}).get("members", []))
        key = (variant, members, tuple(result["utility"]["subjects"]))
        if key not in self.cache:
            n_classes = self.results.cohort.get("n_classes")
            values = self.results.majority_baseline_dice(variant, members, key[2], n_classes)
            self.cache[key] = [] if values is None else [float(v) for v in values]
        return self.cache[key]


def _point(
    study: str, variant: str, arch: str, slug: str, rows: list[dict[str, Any]], ref: dict[int, dict]
) -> FrontierPoint:
    d = rows[0]["defence"]
    dice = [v for r in rows for v in r["utility"]["dice"]]
    ref_dice: list[float] = []  # the reference's Dice and this point's on the same subjects
    own_dice: list[float] = []
    for r in rows:
        base = ref.get(r["fold"])
        if base is not None and base["utility"]["subjects"] == r["utility"]["subjects"]:
            ref_dice += base["utility"]["dice"]
            own_dice += r["utility"]["dice"]
    fi = [r["feature_inversion"] for r in rows]
    hits = int(sum(sum(f["top1"]) for f in fi))
    n = int(sum(len(f["top1"]) for f in fi))
    m = max(int(f["n_candidates"]) for f in fi)
    gains = [v for f in fi for v in f["ssim_gain"]]
    nm_gains = [v for f in fi for v in f.get("non_member_ssim_gain", [])]
    gap = group_gap(gains, nm_gains) if nm_gains else _nan()
    tl = [r["training_data_leakage"] for r in rows]
    mia = fold_auc([(t.get("member_scores", []), t.get("non_member_scores", [])) for t in tl])
    info = rows[0].get("defence_info") or {}
    return FrontierPoint(
        study=study,
        variant=variant,
        arch=arch,
        defence=slug,
        kind=d["kind"],
        strength=float(d["strength"]),
        label=d["label"],
        threat_model=d["threat_model"],
        folds=[int(r["fold"]) for r in rows],
        dice=bootstrap_mean(dice),
        dice_cost=paired_cost(ref_dice, own_dice),
        reid_top1=clopper_pearson(hits, n),
        reid_hits=hits,
        chance_top1=1.0 / m,
        p_value_top1=binomial_p(hits, n, 1.0 / m),
        ssim_gain=bootstrap_mean(gains),
        member_gap=gap,
        mia_auc=mia,
        mia_attack=str(tl[0].get("attack", "")),
        epsilon=info.get("epsilon"),
        delta=info.get("delta"),
    )


def pareto_front(utility: Sequence[float], leakage: Sequence[float]) -> np.ndarray:
    """Boolean mask of the non-dominated points: no other point has utility >= and
    leakage <= with at least one strict. Points with a NaN coordinate are never on it."""
    u = np.asarray(utility, dtype=float)
    lk = np.asarray(leakage, dtype=float)
    ok = np.isfinite(u) & np.isfinite(lk)
    on = ok.copy()
    for i in np.flatnonzero(ok):
        better = ok & (u >= u[i]) & (lk <= lk[i]) & ((u > u[i]) | (lk < lk[i]))
        if better.any():
            on[i] = False
    return on


def verdict(points: Sequence[FrontierPoint], max_cost: float = MAX_DICE_COST) -> list[str]:
    """Plain sentences, one per (study, variant, arch): does any defence bring
    re-identification to chance at a Dice cost <= ``max_cost``, and which."""
    lines = []
    for key in sorted({p.group for p in points}):
        group = [p for p in points if p.group == key]
        ref = next((p for p in group if p.is_reference), None)
        study, variant, arch = key
        name = f"{ARCH_LABELS.get(arch, arch)} ({variant}, {study})"
        if ref is None:
            lines.append(f"{name}: no undefended reference was run; no verdict.")
            continue
        ref_txt = (
            f"undefended: Dice {ref.dice.value:.3f}, re-identified {ref.reid_hits}/{ref.reid_top1.n} "
            f"(chance {ref.chance_top1:.3f})"
        )
        defended = [p for p in group if not p.is_reference]
        caveat = ""
        if math.isfinite(ref.dice.value) and ref.dice.value < LOW_UTILITY:
            caveat = (
                f" Caution: the undefended victim barely segments (Dice {ref.dice.value:.3f} < "
                f"{LOW_UTILITY}), so Dice costs say little; train it longer."
            )
        elif ref.below_trivial:
            caveat = (
                f" Caution: the undefended victim segments no better than a map that ignores the image "
                f"(Dice {ref.dice.value:.3f} vs {ref.trivial_dice.value:.3f} for the members' majority "
                "label at each voxel), so Dice costs say little; train it longer."
            )
        if ref.reid_at_chance:
            lines.append(
                f"{name}: nothing to fix — the undefended victim's re-identification is already not "
                f"distinguishable from chance (p = {ref.p_value_top1:.2f}; {ref_txt}), so no defence can "
                f"be credited with bringing it there.{caveat}"
            )
            continue
        good = [
            p
            for p in defended
            if p.reid_at_chance and math.isfinite(p.dice_cost.value) and p.dice_cost.value <= max_cost
        ]
        if good:
            which = "; ".join(
                f"{p.label}: re-identified {p.reid_hits}/{p.reid_top1.n} (p = {p.p_value_top1:.2f}), "
                f"Dice cost {p.dice_cost.value:+.3f}"
                for p in good
            )
            lines.append(
                f"{name}: YES — feature-inversion re-identification is at chance with a Dice cost "
                f"<= {max_cost} for: {which} ({ref_txt}).{caveat}"
            )
        else:
            at_chance = [p for p in defended if p.reid_at_chance]
            if at_chance:
                best = min(
                    at_chance, key=lambda p: p.dice_cost.value if math.isfinite(p.dice_cost.value) else 9
                )
                extra = (
                    f" The cheapest defence that reaches chance is {best.label}, at a Dice cost of "
                    f"{best.dice_cost.value:+.3f}."
                )
                if best.below_trivial:
                    extra += (
                        f" Its Dice, {best.dice.value:.3f}, is below the {best.trivial_dice.value:.3f} of a "
                        "segmenter that ignores the image (the members' majority label at each voxel)."
                    )
            else:
                extra = " No defence tried brought re-identification to chance at any cost."
            lines.append(
                f"{name}: NO — no defence brings feature-inversion re-identification to chance at a "
                f"Dice cost <= {max_cost} ({ref_txt}).{extra}{caveat}"
            )
    return lines
