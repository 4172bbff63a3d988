"""A coarse version of the body mesh for drawing: vertex clustering on a grid.

Vertices of the rest mesh that fall into the same grid cell merge into one representative
(the vertex nearest the cell's mean), triangles that collapse are dropped. The result keeps
*indices into the full mesh*, so the coarse mesh is posed by taking those vertices from the
posed full mesh: no separate skinning data.
"""

from __future__ import annotations

import numpy as np


def cluster_decimate(vertices: np.ndarray, faces: np.ndarray, cell: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(keep, coarse_faces)``: indices of the kept vertices in the full mesh, and
    triangles as indices into ``keep``. ``cell`` is the grid size in metres."""
    vertices = np.asarray(vertices, np.float64)
    keys = np.floor((vertices - vertices.min(0)) / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.ravel()
    means = np.zeros((len(counts), 3))
    np.add.at(means, cluster, vertices)
    means /= counts[:, None]
    # Representative: the member nearest its cluster's mean.
    dist = np.linalg.norm(vertices - means[cluster], axis=1)
    order = np.lexsort((dist, cluster))
    first = np.ones(len(order), bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    keep = order[first]  # one vertex per cluster, clusters in ascending order
    mapped = cluster[np.asarray(faces)]
    good = (mapped[:, 0] != mapped[:, 1]) & (mapped[:, 1] != mapped[:, 2]) & (mapped[:, 0] != mapped[:, 2])
    mapped = np.unique(np.sort(mapped[good], axis=1), axis=0, return_index=True)[1]
    coarse = cluster[np.asarray(faces)][good][np.sort(mapped)]
    return keep, coarse
