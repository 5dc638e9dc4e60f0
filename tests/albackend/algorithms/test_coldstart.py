"""albackend.algorithms.coldstart: the cold-start ranking (representative, diverse, deterministic), placing new
tasks into it, and the near-duplicate filters of whole and chunk-by-chunk published rankings."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from albackend.algorithms.coldstart import (DEMOTED, TopBatch, apportion, demote_near_duplicates, place, rank_pool,
                                            rank_scores, spherical_kmeans, typicality, unit_rows)


def blobs(sizes: list[int], dim: int = 16, spread: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated clusters of the given sizes: (embeddings, blob of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 3
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def max_pairwise_cos(x: np.ndarray) -> float:
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return float(s.max()) if len(x) > 1 else -1.0


# ------------------------------------------------------------------------------------------------ the ranking
def test_scores_follow_the_backends_direction_and_span_0_to_1():
    emb, _ = blobs([40, 30, 20, 10])
    r = rank_pool(emb, clusters=4, top=10, threshold=0.99)
    assert sorted(r.order.tolist()) == list(range(100))  # a permutation of the pool
    assert r.scores[r.order[0]] == 0.0 and r.scores[r.order[-1]] == 1.0  # LOWER = label first (LS serves it)
    assert np.all(np.diff(r.scores[r.order]) > 0)


def test_top_covers_every_cluster_and_outliers_come_last():
    emb, blob = blobs([100, 90, 80, 70], seed=3)
    emb = np.vstack([emb, emb.mean(0) + 30 * np.eye(emb.shape[1])[1]])  # one far outlier, row 340
    r = rank_pool(emb, clusters=4, neighbours=10, top=0, threshold=0, seed=1)  # no near-duplicate demotion here
    assert sorted(blob[r.order[:4]].tolist()) == [0, 1, 2, 3]  # one per cluster first (quotients 100..70 > 100/3)
    mates = r.order[r.labels[r.order] == r.labels[340]]
    assert mates[-1] == 340  # the outlier is its cluster's last pick, among the last tenth overall
    assert np.flatnonzero(r.order == 340)[0] >= 0.9 * len(emb)


def test_deeper_down_clusters_are_represented_by_size():
    emb, blob = blobs([300, 200, 100, 50], seed=4)
    r = rank_pool(emb, clusters=4, neighbours=10, top=0, threshold=0, seed=0)
    head = np.bincount(blob[r.order[:65]], minlength=4)
    assert head[0] > head[1] > head[2] > head[3] >= 1, head


def test_the_most_typical_member_of_a_cluster_comes_first():
    rng = np.random.default_rng(0)
    core = rng.normal(size=(50, 8)) * 0.05 + 1.0
    fringe = rng.normal(size=(5, 8)) * 0.8 + 1.0
    emb = np.vstack([core, fringe, -np.ones((30, 8)) + rng.normal(size=(30, 8)) * 0.05])
    x = unit_rows(emb, emb.mean(0))
    _, labels = spherical_kmeans(x, 2, np.random.default_rng(0))
    typ = typicality(x, labels, neighbours=5)
    assert typ[:50].mean() > typ[50:55].max()
    order, quotient = apportion(labels, typ)
    assert order[0] < 50 and quotient[order[0]] == 55.0  # the denser core, its first pick has priority s / 1


def test_deterministic_for_a_seed():
    emb, _ = blobs([60, 40, 20], seed=2)
    a, b = (rank_pool(emb, clusters=6, top=10, threshold=0.9, seed=7) for _ in range(2))
    assert np.array_equal(a.order, b.order) and np.array_equal(a.scores, b.scores)


def test_rank_scores_edge_cases():
    assert rank_scores(np.array([0])).tolist() == [0.0]
    assert rank_scores(np.array([2, 0, 1])).tolist() == [0.5, 1.0, 0.0]
    r = rank_pool(np.zeros((0, 4)), top=5, threshold=0.9)
    assert len(r.order) == 0 and len(r.scores) == 0


def test_input_shape_is_checked():
    with pytest.raises(ValueError, match="2-D"):
        rank_pool(np.zeros(5), top=5, threshold=0.9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), dim=st.integers(2, 12), dups=st.integers(0, 10), seed=st.integers(0, 10_000),
       top=st.integers(1, 30))
def test_property_top_is_free_of_duplicates_and_scores_are_a_ranking(n, dim, dups, seed, top):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim))
    for _ in range(dups):  # exact duplicates of random rows
        emb = np.vstack([emb, emb[rng.integers(len(emb))]])
    r = rank_pool(emb, clusters=5, neighbours=4, top=top, threshold=0.95, seed=seed)
    m = len(emb)
    assert sorted(r.order.tolist()) == list(range(m))
    assert 0.0 <= r.scores.min() and r.scores.max() <= 1.0 and len(np.unique(r.scores)) == m  # non-constant
    demoted = r.quotient < 0
    head = r.order[:top]
    head = head[~demoted[head]]  # fewer than `top` only when every other task is a demoted near-duplicate
    assert len(head) == min(top, int((~demoted).sum()))
    assert max_pairwise_cos(r.x[head]) < 0.95
    rows = [tuple(np.round(emb[i], 9)) for i in head]
    assert len(set(rows)) == len(rows)  # two copies of one text are never both in the top
    for i in np.flatnonzero(demoted):  # demoted only for a reason: a better kept task it near-duplicates
        assert float(np.max(r.x[r.order[:top]][~demoted[r.order[:top]]] @ r.x[i])) >= 0.95


# --------------------------------------------------------------------------------------------- near duplicates
def test_demote_moves_duplicates_behind_everything_in_order():
    x = unit_rows(np.array([[1, 0, 0], [1, 0, 0.01], [0, 1, 0], [0, 0, 1], [0, 1, 0.01]], float))
    order, demoted = demote_near_duplicates(np.arange(5), x, top=3, threshold=0.99)
    assert order.tolist() == [0, 2, 3, 4, 1] and demoted.tolist() == [False, True, False, False, False]
    # the walk stops once `top` are kept: task 4 is a duplicate, but outside the top
    assert demote_near_duplicates(np.arange(5), x, top=0, threshold=0.99)[0].tolist() == [0, 1, 2, 3, 4]
    assert demote_near_duplicates(np.arange(5), x, top=3, threshold=0.0)[0].tolist() == [0, 1, 2, 3, 4]


def stream(batch: TopBatch, scores: np.ndarray, emb: np.ndarray, chunk: int) -> np.ndarray:
    out = []
    for a in range(0, len(scores), chunk):
        out.append(batch.admit(scores[a:a + chunk], lambda idx, a=a: emb[a + idx]))
    return np.concatenate(out)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 80), top=st.integers(1, 20), chunk=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_property_streamed_top_is_distinct_and_only_duplicates_move(n, top, chunk, seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(2, n // 3), 6))
    emb = base[rng.integers(len(base), size=n)] + rng.normal(size=(n, 6)) * rng.choice([0.0, 1.0], size=(n, 1))
    scores = rng.random(n)
    out = stream(TopBatch(top, 0.97), scores, emb, chunk)
    raised = out != scores
    assert np.all(out[raised] == DEMOTED) and DEMOTED == 1.0  # demoted to the last score LS accepts, rest untouched
    x = unit_rows(emb)
    best = np.argsort(out, kind="stable")[:top]
    best = best[~raised[best]]  # demoted ones tie at 1.0 behind every other; only with too few others in the top
    assert max_pairwise_cos(x[best]) < 0.97


def test_top_batch_asks_embeddings_best_first_and_only_while_tasks_can_enter():
    asked: list[int] = []
    batch = TopBatch(2, 0.9)
    emb = np.eye(6)

    def rows(idx):
        asked.extend(idx.tolist())
        return emb[idx]

    batch.admit(np.array([0.1, 0.2, 0.9]), rows)
    assert asked == [0, 1]  # the top is full with 0.1 and 0.2: 0.9 cannot enter
    asked.clear()
    batch.admit(np.array([0.95, 0.05, 0.5]), lambda idx: rows(idx + 3))
    assert asked == [4, 5]  # one block of `top`, best first; 0.95 is never embedded
    assert TopBatch(0, 0.9).admit(np.array([0.3]), rows).tolist() == [0.3]


def test_top_batch_checks_past_demoted_candidates():
    """A chunk whose best `top` are copies of one task: the next distinct tasks still enter, and are checked."""
    batch = TopBatch(3, 0.95)
    emb = np.array([[1.0, 0, 0]] * 4 + [[0, 1.0, 0], [0, 1.0, 0.01], [0, 0, 1.0]])
    out = batch.admit(np.arange(7) / 10, lambda idx: emb[idx])
    assert (out == DEMOTED).tolist() == [False, True, True, True, False, True, False]


# ------------------------------------------------------------------------------------------------------ place
def test_place_ranks_a_typical_newcomer_high_and_an_outlier_low():
    emb, _ = blobs([200, 100, 50], spread=1.0, seed=5)
    r = rank_pool(emb, clusters=3, neighbours=10, top=10, threshold=0.995, seed=0)
    new = np.vstack([emb[:200].mean(0), emb.mean(0) + 40 * np.eye(emb.shape[1])[0], emb[r.order[0]]])
    s = place(r, new)
    assert s[0] < 0.05 and s[1] > 0.5 and s[2] < 0.05  # the centre of the largest cluster, an outlier, a copy
    assert np.array_equal(r.scores, rank_scores(r.order))  # the ranking itself is unchanged
    # the publisher's TopBatch, holding the ranking's top, sends the copy of the best task behind every other
    batch = TopBatch(10, 0.995, r.mean)
    head = r.order[:10]
    batch.admit(r.scores[head], lambda i: emb[head[i]])
    out = batch.admit(s, lambda i: new[i])
    assert out[2] == DEMOTED and out[0] == s[0] and out[1] == s[1]
    assert place(r, np.zeros((0, emb.shape[1]))).shape == (0,)
    with pytest.raises(ValueError, match="empty ranking"):
        place(rank_pool(np.zeros((0, 3)), top=1, threshold=0.9), np.ones((1, 3)))


def test_place_agrees_with_ranking_the_whole_pool():
    """A held-out half placed into the ranking of the other half lands where a full ranking puts it (roughly)."""
    emb, _ = blobs([400, 200, 100, 30], dim=12, spread=0.4, seed=9)
    perm = np.random.default_rng(0).permutation(len(emb))
    half, rest = perm[:365], perm[365:]
    r = rank_pool(emb[half], clusters=4, top=0, threshold=0, seed=0)
    full = rank_pool(emb, clusters=4, top=0, threshold=0, seed=0)
    corr = np.corrcoef(place(r, emb[rest]), full.scores[rest])[0, 1]
    assert corr > 0.6, corr
