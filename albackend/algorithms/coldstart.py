"""Cold start and near-duplicate filtering on sentence embeddings (numpy only).

Cold start. Before the first model there is no uncertainty, yet the first labels matter most: a seed set that
covers the pool's main regions (representative) without spending two labels on one thing (diverse) trains a
better first model than a random one on small budgets (TypiClust, Hacohen et al., 2022). `rank_pool` orders a
pool so: spherical k-means on the centred, unit-length embeddings; inside each cluster the members by
*typicality* (inverse mean distance to their nearest neighbours in the cluster); the clusters interleaved by
Sainte-Laguë apportionment — the i-th pick (0-based) of a cluster of size s has priority s / (2i + 1) — so the
top of the ranking holds the most typical task of every large cluster, deeper down each cluster is represented
in proportion to its size, and outliers (tiny clusters) come last.

Scores follow the convention of the backend's predictions (Label Studio's uncertainty sampling serves the LOWEST
score first): a task's cold-start score is its rank / (n - 1), in [0, 1], 0 = label first.

Near duplicates. Annotators label the top of a ranking as one batch, and two near-identical tasks in it waste a
label. `demote_near_duplicates` (a whole ranking) and `TopBatch` (a ranking published chunk by chunk) keep the
best ``top`` tasks pairwise below a cosine similarity ``threshold``: a task too similar to a better one is
demoted to the end (the ranking's last place, or the last score Label Studio accepts, 1.0), never dropped. Cosines are taken after centring (subtracting the pool's mean
embedding): raw mean-pooled embeddings share a dominant direction that makes unrelated texts look alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

CHUNK = 2048  # rows per block of similarities: bounds memory at CHUNK x n floats
DEMOTED = 1.0  # a demoted task's score: the last one Label Studio accepts (it drops predictions scored outside [0, 1])


def unit_rows(emb: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows minus ``mean`` (if given), scaled to unit length, float32; a zero row stays zero."""
    x = np.asarray(emb, dtype=np.float32)
    if mean is not None:
        x = x - np.asarray(mean, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def rank_scores(order: np.ndarray) -> np.ndarray:
    """Per position: its rank in ``order`` / (n - 1), so the first is 0 and the last 1."""
    n = len(order)
    scores = np.zeros(n, dtype=np.float64)
    scores[np.asarray(order, dtype=np.int64)] = np.arange(n) / max(n - 1, 1)
    return scores


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the most similar centre of each unit row, computed in blocks."""
    out = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), CHUNK):
        out[a:a + CHUNK] = np.argmax(x[a:a + CHUNK] @ centres.T, axis=1)
    return out


def spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator,
                     iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centres, labels) of k-means on the unit sphere (cosine), seeded k-means++-style (D² on 1 - cos)."""
    n = len(x)
    k = max(1, min(int(k), n))
    chosen = [int(rng.integers(n))]
    dist = np.clip(1.0 - x @ x[chosen[0]], 0.0, None)
    for _ in range(1, k):
        total = float(dist.sum())
        nxt = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        dist = np.minimum(dist, np.clip(1.0 - x @ x[nxt], 0.0, None))
    centres = x[chosen].copy()
    labels = assign(x, centres)
    for _ in range(iterations):
        members = np.zeros((len(centres), n), dtype=np.float32)
        members[labels, np.arange(n)] = 1.0
        sums = members @ x
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centres = np.where(norms > 0, sums / np.where(norms > 0, norms, 1.0), centres)  # empty: keep the old
        new = assign(x, centres)
        if np.array_equal(new, labels):
            break
        labels = new
    return centres, labels


def _mean_distance(sims: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance (unit vectors) to the k most similar columns of each row."""
    top = -np.partition(-sims, k - 1, axis=1)[:, :k]
    return np.sqrt(np.clip(2.0 - 2.0 * top, 0.0, None)).mean(axis=1)


def typicality(x: np.ndarray, labels: np.ndarray, neighbours: int = 20) -> np.ndarray:
    """1 / (mean distance to the ``neighbours`` nearest members of the same cluster); 0 for a cluster of one."""
    out = np.zeros(len(x), dtype=np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        k = min(int(neighbours), len(idx) - 1)
        xc = x[idx]
        for a in range(0, len(idx), CHUNK):
            sims = xc[a:a + CHUNK] @ xc.T
            rows = np.arange(sims.shape[0])
            sims[rows, a + rows] = -np.inf  # not its own neighbour
            out[idx[a:a + CHUNK]] = 1.0 / (1e-6 + _mean_distance(sims, k))
    return out


def apportion(labels: np.ndarray, typ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, quotient): Sainte-Laguë over clusters, members by typicality; ties by size, typicality, index."""
    n = len(labels)
    idx = np.arange(n)
    sizes = np.bincount(labels, minlength=int(labels.max()) + 1 if n else 0)
    grouped = np.lexsort((idx, -typ, labels))
    first = np.searchsorted(labels[grouped], labels[grouped], side="left")
    within = np.empty(n, dtype=np.int64)
    within[grouped] = idx - first
    quotient = sizes[labels] / (2.0 * within + 1.0)
    return np.lexsort((idx, -typ, -sizes[labels], -quotient)), quotient


def demote_near_duplicates(order: np.ndarray, x: np.ndarray, top: int,
                           threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(order, demoted): walk ``order`` until ``top`` distinct tasks are kept; a task whose cosine with a kept one
    reaches ``threshold`` is moved, in its order, behind everything else. ``threshold`` <= 0 or ``top`` <= 0: off."""
    order = np.asarray(order, dtype=np.int64)
    demoted = np.zeros(len(x), dtype=bool)
    if threshold <= 0 or top <= 0 or len(order) < 2:
        return order, demoted
    kept = np.empty((min(int(top), len(order)), x.shape[1]), dtype=np.float32)
    n_kept, stop = 0, len(order)
    for pos, i in enumerate(order):
        if n_kept == len(kept):
            stop = pos
            break
        if n_kept and float(np.max(kept[:n_kept] @ x[i])) >= threshold:
            demoted[i] = True
            continue
        kept[n_kept] = x[i]
        n_kept += 1
    head = order[:stop]
    return np.concatenate([head[~demoted[head]], order[stop:], head[demoted[head]]]), demoted


@dataclass
class Ranking:
    """A cold-start ranking of n tasks (positions in the caller's order) and what `place` needs later."""

    order: np.ndarray  # positions, label-first first; near-duplicates of the top already demoted to the end
    scores: np.ndarray  # per position, in [0, 1], LOWER = label first
    x: np.ndarray  # centred unit embeddings (n, d)
    mean: np.ndarray  # the centring vector (d,)
    centres: np.ndarray  # (k, d)
    labels: np.ndarray  # cluster per position
    typicality: np.ndarray
    quotient: np.ndarray  # Sainte-Laguë priority per position (higher = earlier); -1 for demoted tasks
    neighbours: int
    top: int
    threshold: float


def rank_pool(emb: np.ndarray, *, top: int, threshold: float, clusters: int = 50, neighbours: int = 20,
              seed: int = 0) -> Ranking:
    """The cold-start ranking of a pool from its embeddings (n, d); deterministic for a seed. ``top`` and
    ``threshold``: the near-duplicate filter (NEAR_DUPLICATE_TOP / _THRESHOLD). 50 clusters put the most typical
    task of each of the 50 largest regions of the pool first; 20 neighbours give a stable typicality."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {emb.shape}")
    mean = emb.mean(axis=0) if len(emb) else np.zeros(emb.shape[1], np.float32)
    x = unit_rows(emb, mean)
    if len(emb) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Ranking(empty, np.zeros(0), x, mean, np.zeros((0, emb.shape[1]), np.float32), empty,
                       np.zeros(0), np.zeros(0), neighbours, top, threshold)
    centres, labels = spherical_kmeans(x, clusters, np.random.default_rng(seed))
    typ = typicality(x, labels, neighbours)
    order, quotient = apportion(labels, typ)
    order, demoted = demote_near_duplicates(order, x, top, threshold)
    return Ranking(order, rank_scores(order), x, mean, centres, labels, typ, np.where(demoted, -1.0, quotient),
                   neighbours, top, threshold)


def place(r: Ranking, emb: np.ndarray) -> np.ndarray:
    """Cold-start scores of tasks outside the ranking (imported later, or embedded after the ranked sample), as
    if each were inserted alone: its cluster, its typicality among that cluster's members, hence its Sainte-Laguë
    priority and rank. The ranking's own scores stay as they are. Near-duplicates are the caller's `TopBatch`'s
    business: a placed task may duplicate one placed before it."""
    n = len(r.order)
    if n == 0:
        raise ValueError("an empty ranking places nothing: rank the tasks themselves with rank_pool")
    q = unit_rows(np.asarray(emb, dtype=np.float32).reshape(-1, r.x.shape[1]), r.mean)
    if len(q) == 0:
        return np.zeros(0, dtype=np.float64)
    lab = assign(q, r.centres)
    sizes = np.bincount(r.labels, minlength=len(r.centres))
    quot = np.zeros(len(q))
    for c in np.unique(lab):
        new, members = np.flatnonzero(lab == c), np.flatnonzero(r.labels == c)
        if len(members) == 0:
            continue  # an emptied cluster: priority 0, behind every ranked task
        typ = 1.0 / (1e-6 + _mean_distance(q[new] @ r.x[members].T, min(r.neighbours, len(members))))
        member_typ = np.sort(r.typicality[members])  # ascending
        better = len(members) - np.searchsorted(member_typ, typ, side="right")
        quot[new] = sizes[c] / (2.0 * better + 1.0)
    ranked_q = np.sort(r.quotient[r.quotient >= 0])
    pos = len(ranked_q) - np.searchsorted(ranked_q, quot, side="right")
    return np.clip(pos / max(n - 1, 1), 0.0, 1.0)


class TopBatch:
    """The best ``top`` distinct tasks of a ranking published chunk by chunk (lowest scores first).

    `admit` takes each chunk's scores and returns them with every newcomer that would enter the current top but
    near-duplicates a member set to `DEMOTED`, the last score; members pushed out of the top by better newcomers leave it. As the
    top's worst score only falls, a demoted task never re-enters, so at every moment the top ``top`` published
    scores are pairwise distinct. Embeddings are asked for (``embed(indices)``) only for the chunk's candidates.
    """

    def __init__(self, top: int, threshold: float, mean: np.ndarray | None = None):
        self.top, self.threshold, self.mean = int(top), float(threshold), mean
        self.scores = np.zeros(0, dtype=np.float64)
        self.x: np.ndarray | None = None
        self.demoted = 0

    @property
    def enabled(self) -> bool:
        return self.top > 0 and self.threshold > 0

    def _enters(self, score: float) -> bool:
        return len(self.scores) < self.top or score < self.scores.max()

    def admit(self, scores: np.ndarray, embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``scores`` with near-duplicates of the top set to `DEMOTED`. ``embed(indices)`` gives embeddings
        (centred by ``mean`` and normalised here), asked for ``top`` candidates at a time, best first, and only
        while the next candidate could still enter the top."""
        out = np.asarray(scores, dtype=np.float64).copy()
        if not self.enabled:
            return out
        order = np.argsort(out, kind="stable")
        for start in range(0, len(order), self.top):
            block = order[start:start + self.top]
            if not self._enters(out[block[0]]):
                break
            x = unit_rows(np.asarray(embed(block), dtype=np.float32), self.mean)
            if self.x is None:
                self.x = np.zeros((0, x.shape[1]), dtype=np.float32)
            for j, i in enumerate(block):
                if not self._enters(out[i]):
                    return out  # sorted: no later task can enter either
                self._take(out, i, x[j])
        return out

    def _take(self, out: np.ndarray, i: int, row: np.ndarray) -> None:
        """Demote task ``i`` if it near-duplicates a member, else make it a member (dropping the worst if full)."""
        if len(self.scores) and float(np.max(self.x @ row)) >= self.threshold:
            out[i] = DEMOTED
            self.demoted += 1
            return
        if len(self.scores) >= self.top:
            worst = int(np.argmax(self.scores))
            self.scores, self.x = np.delete(self.scores, worst), np.delete(self.x, worst, axis=0)
        self.scores = np.append(self.scores, out[i])
        self.x = np.vstack([self.x, row[None]])
