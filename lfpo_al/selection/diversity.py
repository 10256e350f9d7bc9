"""Farthest-point choice among candidates in the model's descriptor space.

The most uncertain candidate (highest score) is taken first; each next one is the candidate farthest
(Euclidean, in descriptor space) from every frame chosen so far, ties going to the higher score and then
to the earlier frame. A budget of n labels then covers n different environments instead of n
neighbouring frames of the one trajectory that happens to be most uncertain. Descriptor dimensions
are standardised over the candidates first so that no few large components decide the distance.
"""

from __future__ import annotations

import numpy as np


def farthest_point_order(features: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (into ``features``) of at most ``k`` rows in choice order."""
    features = np.asarray(features, dtype=float)
    scores = np.asarray(scores, dtype=float)
    n = features.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    spread = features.std(axis=0)
    scaled = (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    order = np.lexsort((np.arange(n), -scores))  # by score, then frame order
    chosen = [int(order[0])]
    distance = np.linalg.norm(scaled - scaled[chosen[0]], axis=1)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    while len(chosen) < min(k, n):
        distance[chosen] = -np.inf
        best = np.flatnonzero(distance == distance.max())
        pick = int(best[np.argmin(rank[best])])
        chosen.append(pick)
        distance = np.minimum(distance, np.linalg.norm(scaled - scaled[pick], axis=1))
    return np.asarray(chosen, dtype=np.int64)
