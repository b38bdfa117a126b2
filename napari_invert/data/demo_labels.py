"""Label table and label map of the synthetic demo cohort.

:data:`DEMO_LABEL_NAMES` (16 structures) and :func:`make_labels`, which draws them on the
MNI152 template from coordinates (lobes by simple planes) and tissue maps.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_invert.data.demo_space import DemoGrid

#: Label value -> structure name (0 = background / unlabelled CSF).
DEMO_LABEL_NAMES: dict[int, str] = {
    1: "left frontal cortex",
    2: "right frontal cortex",
    3: "left parietal cortex",
    4: "right parietal cortex",
    5: "left temporal cortex",
    6: "right temporal cortex",
    7: "left occipital cortex",
    8: "right occipital cortex",
    9: "left cerebral white matter",
    10: "right cerebral white matter",
    11: "left lateral ventricle",
    12: "right lateral ventricle",
    13: "left deep grey matter",
    14: "right deep grey matter",
    15: "cerebellum",
    16: "brainstem",
}


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def make_labels(
    t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, mask: np.ndarray, depth: np.ndarray, grid: DemoGrid
) -> np.ndarray:
    """Coordinate- and tissue-based label map (:data:`DEMO_LABEL_NAMES`) on the template.

    ``depth`` is the distance (mm) below the smooth brain envelope. Lobes follow simple
    planes in MNI mm (central sulcus, Sylvian fissure, parieto-occipital line, tentorium).
    """
    x, y, z = grid.mesh()
    left = x < 0
    labels = np.zeros(mask.shape, dtype=np.uint8)

    grey = mask & (gm >= wm) & (gm > 0.3)
    white = mask & (wm > gm) & (wm > 0.3)

    # infratentorial: cerebellum below a tilted tentorium, brainstem in front of it
    tentorium = z < -4.0 - 0.45 * np.maximum(0.0, -45.0 - y) - 0.15 * np.abs(x)
    brainstem = mask & (np.abs(x) < 14.0) & (y > -44.0) & (y < -8.0) & (z < -8.0)
    cerebellum = mask & (y < -38.0) & tentorium & ~brainstem & (grey | white)
    brainstem &= grey | white

    # lateral ventricles: dark, deep, off the midline, one connected body per side
    vent_cand = (
        mask
        & (t1 < 0.45)
        & (depth > 12.0)
        & (np.abs(x) > 2.0)
        & (np.abs(x) < 30.0)
        & (y > -50.0)
        & (y < 35.0)
        & (z > -8.0)
        & (z < 35.0)
    )
    vent_l = largest_component(vent_cand & left)
    vent_r = largest_component(vent_cand & ~left)

    deep = grey & (depth > 17.0) & (np.abs(x) < 32.0) & (y > -38.0) & (y < 28.0) & (z > -24.0) & (z < 22.0)

    occipital = y < -70.0 + 0.1 * z
    temporal = (z < 4.0 + 0.35 * np.maximum(0.0, -y - 10.0)) & (y < 22.0) & ((np.abs(x) > 24.0) | (y < -15.0))
    frontal = y > -12.0 - 0.25 * z
    supra = ~(cerebellum | brainstem)

    def put(region: np.ndarray, value_left: int, value_right: int) -> None:
        free = region & (labels == 0)
        labels[free & left] = value_left
        labels[free & ~left] = value_right

    labels[brainstem] = 16
    labels[cerebellum & (labels == 0)] = 15
    put(vent_l | vent_r, 11, 12)
    put(deep & supra, 13, 14)
    put(white & supra, 9, 10)
    cortex = grey & supra
    put(cortex & occipital, 7, 8)
    put(cortex & temporal, 5, 6)
    put(cortex & frontal, 1, 2)
    put(cortex, 3, 4)
    labels[~mask] = 0
    return labels
