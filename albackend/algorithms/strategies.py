"""Active-learning query strategies on plain numpy arrays (paper section 3.1).

Convention: every strategy returns an *uncertainty* array where HIGHER = MORE
UNCERTAIN (queried first).  Label Studio serves tasks with the LOWEST
prediction ``score`` first, so :func:`confidence` maps uncertainty to a score
that is monotone decreasing in it.  Keeping the two directions in one module
means the adapters never have to remember which way a strategy points.

This module is an algorithm layer: numpy only, no torch, HTTP or Label Studio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "MahalanobisFit",
    "STRATEGIES",
    "StrategyInfo",
    "confidence",
    "entropy",
    "fit_mahalanobis",
    "get_strategy",
    "least_confident",
    "least_confident_multilabel",
    "mahalanobis",
    "margin",
    "mnlp",
    "random_scores",
    "select_by_token_budget",
    "select_top_k",
]

_LOG_EPS = 1e-12
# Bytes of float64 scratch the chunked Mahalanobis computation may use at once.
_MAHALANOBIS_CHUNK_BYTES = 64 * 1024 * 1024
_MAX_JITTER_STEPS = 40


def _as_probs(probs: np.ndarray) -> np.ndarray:
    """Validate an (N, C) probability matrix; a bad shape is a caller bug, so fail loudly."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities of shape (N, C), got shape {p.shape}")
    if p.shape[1] == 0 and p.shape[0] > 0:
        raise ValueError("probabilities need at least one class (C >= 1)")
    return p


# --------------------------------------------------------------------------- #
# Probability-based strategies
# --------------------------------------------------------------------------- #


def least_confident(probs: np.ndarray) -> np.ndarray:
    """LC_cls = 1 - max_y P(y|x): the paper's classification strategy."""
    p = _as_probs(probs)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    return 1.0 - p.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2): a small gap between the two best classes is uncertain.

    With a single class there is no decision to make, so the uncertainty is 0.
    """
    p = _as_probs(probs)
    n, c = p.shape
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if c == 1:
        return np.zeros(n, dtype=np.float64)
    top2 = np.partition(p, c - 2, axis=1)[:, c - 2 :]  # the two largest, in order
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy -sum_c p log p (nats); 0 * log 0 is taken as 0."""
    p = _as_probs(probs)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def least_confident_multilabel(probs: np.ndarray) -> np.ndarray:
    """LC for independent sigmoid outputs (Label Studio ``choice="multiple"``).

    Each class is its own binary decision with confidence max(p_c, 1 - p_c).
    A multi-label prediction is only as trustworthy as its shakiest decision,
    so uncertainty = 1 - min_c max(p_c, 1 - p_c), in [0, 0.5].  (Averaging over
    classes would let many easy negatives hide one coin-flip label.)
    """
    p = _as_probs(probs)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    per_class = np.maximum(p, 1.0 - p)
    return 1.0 - per_class.min(axis=1)


def mnlp(word_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Maximum Normalized Log-Probability for tagging (Shen et al., 2017).

    ``word_probs[k]`` is an (n_words, n_tags) probability array at the first
    sub-word of each word.  MNLP = -(1/n) sum_i log max_y P(y_i), n = words:
    normalising by length keeps long sentences from looking uncertain merely
    because they are long.  A sentence with no words scores 0.0.
    """
    out = np.zeros(len(word_probs), dtype=np.float64)
    for k, wp in enumerate(word_probs):
        a = np.asarray(wp, dtype=np.float64)
        if a.size == 0:
            continue
        if a.ndim != 2:
            raise ValueError(
                f"word_probs[{k}] must have shape (n_words, n_tags), got {a.shape}"
            )
        best = np.clip(a.max(axis=1), _LOG_EPS, None)
        out[k] = -float(np.mean(np.log(best)))
    return out


# --------------------------------------------------------------------------- #
# Mahalanobis distance (Lee et al., 2018; paper eq. 1)
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class MahalanobisFit:
    """Class-conditional Gaussians with a shared covariance, fitted on labeled embeddings.

    ``classes[j]`` is the label whose centroid is ``centroids[j]``; ``jitter``
    records how much diagonal loading made the covariance invertible.
    """

    centroids: np.ndarray  # (C, D) float64
    precision: np.ndarray  # (D, D) float64, inverse of the (jittered) shared covariance
    classes: np.ndarray  # (C,) int64 labels present in the training data
    jitter: float = 0.0


def _fit_inputs(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) finite float64 embeddings and (N,) int64 labels, or a ValueError saying what is wrong."""
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, D), got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must have shape ({x.shape[0]},) to match embeddings, got {y.shape}"
        )
    if x.shape[0] < 1:
        raise ValueError(
            "Mahalanobis needs at least 1 labeled example to fit class centroids, got 0"
        )
    if x.shape[1] < 1:
        raise ValueError("embeddings need at least one dimension (D >= 1)")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integer class ids")
    return x, y.astype(np.int64)


def _jittered_cholesky(cov: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Cholesky factor of cov + jitter I, the jitter starting at 1e-10 * scale and growing x10 until it succeeds."""
    jitter = 0.0
    eye = np.eye(cov.shape[0])
    for step in range(_MAX_JITTER_STEPS + 1):
        try:
            chol = np.linalg.cholesky(cov + jitter * eye)
            break
        except np.linalg.LinAlgError:
            jitter = 1e-10 * scale if step == 0 else jitter * 10.0
    else:  # pragma: no cover - jitter reaches ~1e30 * scale first
        raise ValueError("could not make the covariance positive definite")
    return chol, jitter


def fit_mahalanobis(embeddings: np.ndarray, labels: np.ndarray) -> MahalanobisFit:
    """Fit centroids and the shared precision matrix from labeled embeddings.

    Few labeled examples in a high-dimensional space give a singular covariance
    (D > N, duplicates), so diagonal jitter is added - starting tiny relative to
    the average variance and growing x10 - until Cholesky succeeds.  Everything
    runs in float64 because the inverse of a near-singular matrix amplifies
    rounding error.
    """
    x, y = _fit_inputs(embeddings, labels)

    # Only classes that actually occur get a centroid: an empty class has no mean.
    classes, inverse = np.unique(y, return_inverse=True)
    n, d = x.shape
    counts = np.bincount(inverse, minlength=classes.size).astype(np.float64)
    centroids = np.zeros((classes.size, d), dtype=np.float64)
    np.add.at(centroids, inverse, x)
    centroids /= counts[:, None]

    residuals = x - centroids[inverse]
    cov = residuals.T @ residuals / n
    cov = (cov + cov.T) / 2.0

    scale = float(np.trace(cov)) / d
    if not np.isfinite(scale) or scale <= 0.0:
        scale = 1.0  # all residuals zero (e.g. one example per class): any isotropic scale
    chol, jitter = _jittered_cholesky(cov, scale)
    # inverse via the Cholesky factor: P = L^-T L^-1, symmetric by construction
    l_inv = np.linalg.solve(chol, np.eye(d))
    precision = l_inv.T @ l_inv
    precision = (precision + precision.T) / 2.0
    return MahalanobisFit(
        centroids=centroids, precision=precision, classes=classes, jitter=float(jitter)
    )


def _whitening(precision: np.ndarray) -> np.ndarray:
    """W with W W^T = precision, so distances become Euclidean and never negative."""
    try:
        return np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(precision)
        return vecs * np.sqrt(np.clip(vals, 0.0, None))


def mahalanobis(embeddings: np.ndarray, fit: MahalanobisFit) -> np.ndarray:
    """MD = min_c (h - mu_c)^T Sigma^-1 (h - mu_c): far from every class = uncertain.

    Whitens once (z = h W) and takes squared Euclidean distances to the whitened
    centroids, in chunks of rows so an (N, C, D) tensor never materialises.
    This avoids the cancellation of the expanded h^T P h - 2 h^T P mu + ... form.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    centroids = np.asarray(fit.centroids, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, D), got {x.shape}")
    if centroids.ndim != 2 or centroids.shape[0] == 0:
        raise ValueError("MahalanobisFit has no centroids")
    d = centroids.shape[1]
    if x.shape[1] != d:
        raise ValueError(f"embeddings have dimension {x.shape[1]}, the fit has {d}")
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)

    w = _whitening(np.asarray(fit.precision, dtype=np.float64))
    mu_w = centroids @ w  # (C, D)
    c = mu_w.shape[0]
    chunk = max(1, _MAHALANOBIS_CHUNK_BYTES // (8 * c * d))
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        z = x[start : start + chunk] @ w  # (b, D)
        diff = z[:, None, :] - mu_w[None, :, :]  # (b, C, D)
        out[start : start + chunk] = np.einsum("bcd,bcd->bc", diff, diff).min(axis=1)
    return out


# --------------------------------------------------------------------------- #
# Random baseline, scores for Label Studio, registry
# --------------------------------------------------------------------------- #


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform [0, 1) "uncertainty": the no-AL baseline goes through the same ranking code."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return rng.random(n)


def _one_minus(u: np.ndarray) -> np.ndarray:
    return 1.0 - u


def _exp_neg(u: np.ndarray) -> np.ndarray:
    return np.exp(-u)


def _inverse_one_plus(u: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + u)


StrategyKind = Literal["classification", "tagging", "both"]
StrategyInput = Literal["probs", "word_probs", "embeddings", "none"]


@dataclass(frozen=True)
class StrategyInfo:
    """What a strategy needs and produces, so adapters can dispatch without if-chains."""

    name: str
    kind: StrategyKind
    input: StrategyInput
    description: str


STRATEGIES: dict[str, StrategyInfo] = {
    info.name: info
    for info in (
        StrategyInfo(
            "random", "both", "none",
            "Uniform random scores: the paper's no-AL baseline.",
        ),
        StrategyInfo(
            "least_confident", "classification", "probs",
            "1 - max class probability (paper LC_cls); score = max probability.",
        ),
        StrategyInfo(
            "least_confident_multilabel", "classification", "probs",
            "1 - min_c max(p_c, 1 - p_c) over independent sigmoids (choice=multiple).",
        ),
        StrategyInfo(
            "margin", "classification", "probs",
            "1 - (top-1 minus top-2 probability).",
        ),
        StrategyInfo(
            "entropy", "classification", "probs",
            "Shannon entropy of the class distribution; score = exp(-entropy).",
        ),
        StrategyInfo(
            "mnlp", "tagging", "word_probs",
            "Length-normalised negative log-probability of the best tag per word "
            "(paper MNLP_ner); score = geometric mean of max word probabilities.",
        ),
        StrategyInfo(
            "mahalanobis", "classification", "embeddings",
            "Minimum Mahalanobis distance to class centroids (paper MD_cls, eq. 1); "
            "score = 1 / (1 + distance).",
        ),
    )
}

_CONFIDENCE = {
    "random": _one_minus,
    "least_confident": _one_minus,
    "least_confident_multilabel": _one_minus,
    "margin": _one_minus,
    "entropy": _exp_neg,
    "mnlp": _exp_neg,
    "mahalanobis": _inverse_one_plus,
}


def get_strategy(name: str) -> StrategyInfo:
    """Look a strategy up by name; a typo in settings should say what is valid."""
    key = str(name).strip().lower()
    try:
        return STRATEGIES[key]
    except KeyError:
        valid = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown query strategy {name!r}; valid: {valid}") from None


def confidence(uncertainty: np.ndarray, strategy: str) -> np.ndarray:
    """The ``score`` Label Studio receives: LOWER = MORE UNCERTAIN (served first).

    Strictly decreasing in uncertainty and chosen so the number means something
    to an annotator: max probability for LC, geometric-mean word probability
    for MNLP, 1/(1 + d) for Mahalanobis.
    """
    info = get_strategy(strategy)
    u = np.asarray(uncertainty, dtype=np.float64)
    return _CONFIDENCE[info.name](u)


# --------------------------------------------------------------------------- #
# Selection
# --------------------------------------------------------------------------- #


def _ranking(uncertainty: np.ndarray) -> np.ndarray:
    """Indices, most uncertain first, ties by index, NaN last (a failed score is not a signal)."""
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"uncertainty must be 1-D, got shape {u.shape}")
    nan = np.isnan(u)
    neg = np.where(nan, 0.0, -u)
    return np.lexsort((np.arange(u.size), neg, nan))


def select_top_k(uncertainty: np.ndarray, k: int) -> np.ndarray:
    """The k most uncertain indices, descending; ties broken by index for reproducibility."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return _ranking(uncertainty)[:k].astype(np.int64)


def select_by_token_budget(
    uncertainty: np.ndarray, lengths: np.ndarray, budget: int
) -> np.ndarray:
    """Most uncertain first while the cumulative token count stays within ``budget``.

    The paper counts tagging budgets in tokens, not sentences.  The ranking is
    followed strictly (no skipping to shorter sentences, which would bias the
    query towards short ones); at least one item is returned if any exist, so a
    single over-long sentence cannot stall annotation.
    """
    order = _ranking(uncertainty)
    lens = np.asarray(lengths, dtype=np.float64)
    if lens.shape != (order.size,):
        raise ValueError(
            f"lengths must have shape ({order.size},) to match uncertainty, got {lens.shape}"
        )
    if np.any(np.isnan(lens)) or np.any(lens < 0):
        raise ValueError("lengths must be non-negative numbers")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if order.size == 0:
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(lens[order])
    n_take = max(1, int(np.searchsorted(cum, budget, side="right")))
    return order[:n_take].astype(np.int64)
