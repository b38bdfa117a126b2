"""Shadow segmenters: the attacker's own copies of the victim's training recipe.

A white-box attacker knows the victim's architecture and training configuration. It trains
``n_shadows`` segmenters of the same architecture with the same :class:`TrainConfig` on
random halves of ITS OWN subjects (the attack set). Each shadow's half are its IN subjects,
the rest are OUT. Scoring candidates and the attacker's subjects under every shadow gives
the distributions the likelihood-ratio attack (:mod:`napari_invert.membership.attacks`)
calibrates against.

Halves come in complementary pairs (shadow ``2i`` gets a random half, shadow ``2i+1`` its
complement), so with an even number of shadows every attack subject is IN for exactly half
of the shadows and OUT for the other half.

Shadows are saved with :func:`~napari_invert.models.save_segmenter` (safetensors + JSON,
the JSON records which subjects each was trained on) and are resumable: a shadow whose
files exist is loaded instead of retrained, an interrupted one resumes from its training
checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from napari_invert.checkpoint import checkpoint_paths
from napari_invert.config import TrainConfig
from napari_invert.errors import CheckpointError
from napari_invert.membership.signals import SubjectLike
from napari_invert.models import load_segmenter, save_segmenter, segmenter_from_spec, train_segmenter
from napari_invert.models.base import Segmenter

#: ``train_fn(model, images, labels, config, device, **kwargs)`` with the keyword
#: arguments of :func:`~napari_invert.models.train_segmenter` (checkpoint_stem,
#: curve_path, progress, on_step, should_stop).
TrainFn = Callable[..., Any]


@dataclass
class ShadowModel:
    """One trained shadow: the network (eval mode), which attack subjects it was trained
    on (``in_mask[j]`` for attack subject ``j``) and where it is saved."""

    index: int
    model: Segmenter
    in_mask: np.ndarray
    trained_on: list[str]
    stem: Path | None


def shadow_assignment(n_subjects: int, n_shadows: int, seed: int = 0) -> np.ndarray:
    """``(n_shadows, n_subjects)`` bool: ``True`` where a subject is IN a shadow's training set.

    Pairs of shadows take a random half of the subjects (``n_subjects // 2``) and its
    complement; an odd last shadow takes a random half alone.
    """
    if n_subjects < 2:
        raise ValueError(f"shadow training needs at least 2 attacker subjects, got {n_subjects}")
    if n_shadows < 0:
        raise ValueError("n_shadows must be >= 0")
    rng = np.random.default_rng([seed, 31])
    out = np.zeros((n_shadows, n_subjects), dtype=bool)
    half = n_subjects // 2
    for k in range(0, n_shadows, 2):
        chosen = rng.permutation(n_subjects)[:half]
        out[k, chosen] = True
        if k + 1 < n_shadows:
            out[k + 1] = ~out[k]
    return out


def _spec_of(template: Segmenter | dict[str, Any]) -> dict[str, Any]:
    return template.spec() if isinstance(template, Segmenter) else dict(template)


class ShadowFactory(Protocol):
    """How shadows of one architecture are built, saved and loaded.

    ``spec()``: JSON description a saved shadow must match; ``build(seed)``: a freshly
    initialised, trainable network (seeded) with ``spec()``, ``n_classes`` and
    ``in_channels`` (what :func:`~napari_invert.models.train_segmenter` needs);
    ``save(stem, model, meta)`` / ``load(stem, device) -> (model, meta)``: safetensors + JSON.
    """

    def spec(self) -> dict[str, Any]: ...

    def build(self, seed: int) -> nn.Module: ...

    def save(self, stem: Path, model: nn.Module, meta: dict[str, Any]) -> None: ...

    def load(self, stem: Path, device: str | torch.device) -> tuple[nn.Module, dict[str, Any]]: ...


class SegmenterShadows:
    """The default :class:`ShadowFactory`: this project's segmenters, rebuilt from a spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec = dict(spec)

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    def build(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return segmenter_from_spec(self._spec, "victim spec")

    def save(self, stem: Path, model: nn.Module, meta: dict[str, Any]) -> None:
        save_segmenter(stem, model, meta)  # type: ignore[arg-type]

    def load(self, stem: Path, device: str | torch.device) -> tuple[nn.Module, dict[str, Any]]:
        return load_segmenter(stem, device)


def shadow_seeds(seed: int, k: int) -> tuple[int, int]:
    """``(initialisation seed, training seed)`` of shadow ``k``."""
    init, train = np.random.default_rng([seed, k, 37]).integers(0, 2**31 - 1, size=2)
    return int(init), int(train)


def train_shadows(
    template: Segmenter | dict[str, Any],
    attack_subjects: Sequence[SubjectLike],
    train_config: TrainConfig,
    n_shadows: int,
    stems: Sequence[str | Path] | None = None,
    curve_paths: Sequence[str | Path] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    train_fn: TrainFn | None = None,
    progress: bool = False,
    on_step: Callable[[int, int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    factory: ShadowFactory | None = None,
) -> list[ShadowModel]:
    """Train (or load) ``n_shadows`` shadow segmenters on halves of ``attack_subjects``.

    Parameters
    ----------
    template
        The victim (or its :meth:`~Segmenter.spec`): shadows get the same architecture,
        channels and classes, freshly initialised.
    attack_subjects
        The attacker's own subjects (``subject_id``, ``image``, ``labels``).
    train_config
        The victim's training configuration (known to a white-box attacker); each shadow
        gets its own seed (:func:`shadow_seeds`).
    stems
        Where shadow ``k`` is saved (``stems[k]``; ``None``: not saved, not resumable).
        An existing shadow is loaded; its recorded ``trained_on`` must match the split.
    train_fn
        Replaces :func:`~napari_invert.models.train_segmenter` (same signature).
    on_step
        ``on_step(k, step, total, loss)`` during shadow ``k``'s training.
    factory
        Builds, saves and loads the shadows (default: this project's segmenters from
        ``template``'s spec; an audit passes one for the user's own architecture).
    """
    if stems is not None and len(stems) < n_shadows:
        raise ValueError(f"need {n_shadows} shadow stems, got {len(stems)}")
    factory = factory or SegmenterShadows(_spec_of(template))
    spec = factory.spec()
    assign = shadow_assignment(len(attack_subjects), n_shadows, seed)
    ids = [s.subject_id for s in attack_subjects]
    train = train_fn or train_segmenter
    shadows: list[ShadowModel] = []
    for k in range(n_shadows):
        trained_on = [ids[j] for j in np.flatnonzero(assign[k])]
        stem = Path(stems[k]) if stems is not None else None
        init_seed, train_seed = shadow_seeds(seed, k)
        cfg = train_config.model_copy(update={"seed": train_seed})
        if stem is not None and checkpoint_paths(stem)[1].is_file():
            model, meta = factory.load(stem, device)
            problem = None
            if list(meta.get("trained_on", [])) != trained_on:
                problem = "was trained on other subjects than this split assigns"
            elif meta.get("train_config") != cfg.model_dump(mode="json") or model.spec() != spec:
                problem = "was trained with another architecture or training configuration"
            if problem:
                raise CheckpointError(
                    f"{checkpoint_paths(stem)[1]}: shadow {k} {problem}; delete the shadows folder to retrain"
                )
            shadows.append(ShadowModel(k, model, assign[k].copy(), trained_on, stem))
            continue
        members = [attack_subjects[j] for j in np.flatnonzero(assign[k])]
        step_cb = None
        if on_step is not None:
            step_cb = (lambda kk: lambda step, total, loss: on_step(kk, step, total, loss))(k)
        model = train_shadow(
            k,
            spec,
            members,
            trained_on,
            cfg,
            init_seed,
            stem,
            curve_paths[k] if curve_paths is not None else None,
            device=device,
            train_fn=train,
            progress=progress,
            on_step=step_cb,
            should_stop=should_stop,
            factory=factory,
        )
        shadows.append(ShadowModel(k, model, assign[k].copy(), trained_on, stem))
    return shadows


def train_shadow(
    k: int,
    spec: dict[str, Any],
    members: Sequence[SubjectLike],
    trained_on: list[str],
    train_config: TrainConfig,
    init_seed: int,
    stem: Path | None,
    curve_path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    train_fn: TrainFn | None = None,
    progress: bool = False,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    factory: ShadowFactory | None = None,
) -> nn.Module:
    """Train shadow ``k`` (one step of :func:`train_shadows`) and save it at ``stem``.

    ``members``: its IN subjects; ``train_config`` already carries the shadow's training
    seed and ``init_seed`` seeds its initial weights (:func:`shadow_seeds`), so the result
    does not depend on the process it runs in (a study runs shadows as units of work on an
    executor: :mod:`napari_invert.execution.study`). Resumes from ``<stem>_resume``.
    ``factory`` builds and saves it (default: this project's segmenter from ``spec``).
    """
    factory = factory or SegmenterShadows(spec)
    model = factory.build(init_seed)
    resume = stem.with_name(stem.name + "_resume") if stem is not None else None
    (train_fn or train_segmenter)(
        model,
        [s.image for s in members],
        [s.labels for s in members],
        train_config,
        device,
        checkpoint_stem=resume,
        curve_path=curve_path,
        progress=progress,
        on_step=on_step,
        should_stop=should_stop,
    )
    model.eval()
    if stem is not None and resume is not None:
        factory.save(
            stem,
            model,
            {
                "role": "membership shadow",
                "shadow": k,
                "trained_on": trained_on,
                "init_seed": init_seed,
                "train_config": train_config.model_dump(mode="json"),
            },
        )
        # the finished shadow replaces its resume state (JSON first: weights without
        # their JSON count as an unfinished write)
        for path in reversed(checkpoint_paths(resume)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return model
