"""A project's pool embeddings and cold-start ranking on disk, the per-process encoder, and the near-duplicate
filter of every published ranking.

Why one file per project (``MODEL_DIR/projects/<id>/coldstart.npz``): the pool is embedded once, by the cold start
(`albackend.services.coldstart`); the same vectors then place new tasks into the cold-start ranking (/predict, a
later cold-start round) and keep the top of each retrain's ranking free of near-duplicates without running the
encoder over the pool again. Embeddings are stored as float16 (17k × 384 ≈ 13 MB) with the encoder's name: a
changed ACQUISITION_MODEL makes them stale, and they are recomputed.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from albackend.algorithms.coldstart import Ranking, TopBatch, unit_rows
from albackend.models.encoder import SentenceEncoder
from albackend.settings import Settings

log = logging.getLogger(__name__)
DATA_FILE = "coldstart.npz"
MIN_ROWS_FOR_MEAN = 16  # centring on fewer rows would mostly subtract the rows themselves
Embed = Callable[[Sequence[str]], np.ndarray]
_encoders: dict[tuple, SentenceEncoder] = {}
_encoders_lock = threading.Lock()
_loaded: dict[Path, tuple[int, "PoolEmbeddings"]] = {}
_loaded_lock = threading.Lock()


def encoder(settings: Settings) -> SentenceEncoder:
    """The acquisition model's pretrained encoder, loaded once per process."""
    key = (settings.acquisition_model, settings.device, settings.max_length)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = SentenceEncoder(settings.acquisition_model, device=settings.device,
                                             max_length=settings.max_length)
        return _encoders[key]


def default_embed(settings: Settings) -> Embed:
    """``embed(texts)`` with the project's encoder and batch size: what the product injects."""
    return lambda texts: encoder(settings).embed(texts, batch_size=settings.infer_batch_size)


@dataclass
class PoolEmbeddings:
    """Embedded tasks (the ranked sample first) with their cold-start scores, and the ranking of the sample."""

    encoder: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    ranked: int = 0  # the first ``ranked`` ids are the ranking's tasks, in its position order
    ranking: Ranking | None = None

    @classmethod
    def load(cls, project_dir: Path, encoder_name: str) -> "PoolEmbeddings | None":
        """The stored file when it exists and was made by ``encoder_name`` (cached per process by mtime)."""
        path = Path(project_dir) / DATA_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        with _loaded_lock:
            hit = _loaded.get(path)
        if hit is None or hit[0] != mtime:
            try:
                hit = (mtime, cls._read(path))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("unreadable %s (%s): the cold start recomputes it", path, exc)
                return None
            with _loaded_lock:
                _loaded[path] = hit
        return hit[1] if hit[1].encoder == encoder_name else None

    @classmethod
    def _read(cls, path: Path) -> "PoolEmbeddings":
        with np.load(path, allow_pickle=False) as z:
            data = cls(str(z["encoder"]), z["ids"], z["emb"], z["scores"], int(z["ranked"]))
            if data.ranked:
                emb = data.emb[: data.ranked].astype(np.float32)
                data.ranking = Ranking(z["order"], data.scores[: data.ranked], unit_rows(emb, z["mean"]), z["mean"],
                                       z["centres"], z["labels"], z["typicality"], z["quotient"],
                                       int(z["neighbours"]), int(z["top"]), float(z["threshold"]))
        return data

    def save(self, project_dir: Path) -> None:
        """Atomically (temp file + rename): /predict in other processes reads it while a round writes."""
        path = Path(project_dir) / DATA_FILE
        r = self.ranking
        extra = {} if r is None else dict(order=r.order, mean=r.mean, centres=r.centres, labels=r.labels,
                                           typicality=r.typicality, quotient=r.quotient, neighbours=r.neighbours,
                                           top=r.top, threshold=r.threshold)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, encoder=np.array(self.encoder), ids=self.ids, emb=self.emb, scores=self.scores,
                         ranked=np.array(self.ranked), **extra)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def add(self, ids: np.ndarray, emb: np.ndarray, scores: np.ndarray) -> None:
        emb = np.asarray(emb, dtype=np.float16)
        self.emb = emb if len(self.ids) == 0 else np.vstack([self.emb, emb])
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self.scores = np.concatenate([self.scores, np.asarray(scores, dtype=np.float64)])

    def top_batch(self, top: int, threshold: float) -> TopBatch:
        """A `TopBatch` holding the best ``top`` stored tasks: what Label Studio serves first right now."""
        mean = self.ranking.mean if self.ranking is not None else None
        batch = TopBatch(top, threshold, mean)
        best = np.argsort(self.scores, kind="stable")[: max(int(top), 0)]
        if batch.enabled and len(best):
            batch.admit(self.scores[best], lambda i: self.emb[best[i]].astype(np.float32))
        return batch

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where it has none."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        order = np.argsort(self.ids, kind="stable")
        at = np.clip(np.searchsorted(self.ids, ids, sorter=order), 0, len(self.ids) - 1)
        rows = order[at]
        return np.where(self.ids[rows] == ids, rows, -1)


def near_duplicate_filter(settings: Settings, project_dir: Path, texts_of: Callable[[np.ndarray], list[str]],
                          embed: Embed | None = None) -> Callable[[np.ndarray, list[dict]], int] | None:
    """The ``demote`` hook of `albackend.services.rescoring.rescore_pool` (None when NEAR_DUPLICATE_* switch it off).

    Candidates for the top take their stored embeddings; any task without one (cold start off, imported after it)
    is embedded now by the encoder. Without a stored pool mean, the first candidates' mean centres the vectors."""
    if settings.near_duplicate_threshold <= 0 or settings.near_duplicate_top <= 0:
        return None
    stored = PoolEmbeddings.load(project_dir, settings.acquisition_model)
    mean = stored.ranking.mean if stored is not None and stored.ranking is not None else None
    batch = TopBatch(settings.near_duplicate_top, settings.near_duplicate_threshold, mean)
    embed = embed or default_embed(settings)

    def demote(ids: np.ndarray, results: list[dict]) -> int:
        scores = np.array([r["score"] for r in results], dtype=np.float64)

        def rows(idx: np.ndarray) -> np.ndarray:
            at = stored.positions(ids[idx]) if stored is not None else np.full(len(idx), -1)
            known, missing = np.flatnonzero(at >= 0), np.flatnonzero(at < 0)
            fresh = embed(texts_of(ids[idx][missing])) if len(missing) else None
            out = np.zeros((len(idx), stored.emb.shape[1] if fresh is None else fresh.shape[1]), np.float32)
            if fresh is not None:
                out[missing] = fresh
            if len(known):
                out[known] = stored.emb[at[known]]
            if batch.mean is None and len(out) >= MIN_ROWS_FOR_MEAN:
                batch.mean = out.mean(axis=0)
            return out

        new = batch.admit(scores, rows)
        changed = np.flatnonzero(new != scores)
        for i in changed:
            results[i]["score"] = float(new[i])
        return len(changed)

    return demote
