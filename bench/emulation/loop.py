"""The paper's AL protocol (section 5.1) for one group of configurations that acquire identically, one seed.

Per iteration ``it`` (0 = the random seed set):

1. train the acquisition model from scratch on the labeled set (timed: ``train_s``);
2. train every successor of the group from scratch on the same labeled set and evaluate it on the test set;
3. unless it is the last iteration, score the pool and query: the product's round
   (:mod:`albackend.algorithms.ups.round`: score cache sync → UPS subsample, or everything on a full-pool iteration → the injected scorer
   (:func:`albackend.services.predictions.uncertainty` of this learner) → cache update), then
   :func:`albackend.algorithms.strategies.select_top_k` (classification, instances) or
   :func:`~albackend.algorithms.strategies.select_by_token_budget` (tagging, words) on the cached scores, stale ones
   included (timed: ``scoring_s``, ``n_scored``);
4. Table 1: the share of the *standard* query (top of a fresh full-pool scoring) inside the top-k% of the
   previous iteration's full-pool ranking. A UPS run scores the whole pool once more for this measurement
   only (``measure_s``, never counted in ``scoring_s``) and also records ``ups_recall`` (share of the
   standard query among the items UPS rescored) and ``query_vs_standard`` (share of the UPS query that the
   standard query would also have taken).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from albackend.algorithms.coldstart import rank_pool
from albackend.models.encoder import SentenceEncoder
from albackend.services.predictions import resolve_strategy, uncertainty
from albackend.settings import ENV_VARS
from albackend.algorithms.strategies import fit_mahalanobis, random_scores, select_by_token_budget, select_top_k
from bench.emulation.config import ACQ, ConfigSpec, Settings
from bench.emulation.data import Dataset, Split
from bench.emulation.learners import Learner, make_learner
from bench.emulation.metrics import evaluate_targets, share_in, topk_overlap
from bench.emulation.stopping import StopSignals
from albackend.algorithms.ups.cache import ScoreCache
from albackend.algorithms.ups.round import UPSConfig, plan_round, run_round
from albackend.algorithms.ups.sampler import FullPoolSchedule


def evaluate(learner: Learner, test: Split, kind: str) -> float:
    return evaluate_targets(learner.predict_targets(test.texts), test.examples, kind)


def budgets(ds: Dataset, st: Settings) -> tuple[int, int]:
    """(seed budget, query budget): instances for classification, words for tagging."""
    seed_frac, query_frac = st.kind_default(ds.kind)
    total = int(ds.pool.lengths().sum())
    return max(1, round(seed_frac * total)), max(1, round(query_frac * total))


def seed_set(ds: Dataset, budget: int, order: np.ndarray) -> np.ndarray:
    """The first ``budget`` instances (words for tagging) of ``order``; classification gets >= 2 classes."""
    if ds.kind == "tagging":
        cum = np.cumsum(ds.pool.lengths()[order])
        return np.sort(order[: max(1, int(np.searchsorted(cum, budget, side="right")))])
    chosen = list(order[:budget])
    classes = {ds.pool.examples[i].label_ids[0] for i in chosen}
    for i in order[budget:]:  # a classifier needs two classes (albackend.services.training.check_gold)
        if len(classes) >= 2:
            break
        if ds.pool.examples[i].label_ids[0] not in classes:
            chosen.append(i)
            classes.add(ds.pool.examples[i].label_ids[0])
    return np.sort(np.asarray(chosen, dtype=np.int64))


_POOL_EMBEDDINGS: dict[tuple, np.ndarray] = {}  # one encoding of a pool serves every seed


def seed_order(ds: Dataset, lead: ConfigSpec, st: Settings, seed: int) -> np.ndarray:
    """The pool in the order its seed set is drawn: a random permutation, or the backend's cold-start ranking
    (the product's function, `albackend.algorithms.coldstart.rank_pool`, on the acquisition model's pretrained
    encoder, mean-pooled, with the product's default near-duplicate settings; the k-means seeded by ``seed``)."""
    if lead.seed_set != "coldstart":
        return np.random.default_rng(seed).permutation(len(ds.pool))
    key = (ds.name, len(ds.pool), lead.acquisition, st.acquisition_train.max_length)
    if key not in _POOL_EMBEDDINGS:
        encoder = SentenceEncoder(lead.acquisition, device=st.device, max_length=st.acquisition_train.max_length)
        _POOL_EMBEDDINGS[key] = encoder.embed(ds.pool.texts, batch_size=st.acquisition_train.infer_batch_size)
    return rank_pool(_POOL_EMBEDDINGS[key], top=int(ENV_VARS["NEAR_DUPLICATE_TOP"][0]),
                     threshold=float(ENV_VARS["NEAR_DUPLICATE_THRESHOLD"][0]), seed=seed).order


class Scorer:
    """The acquisition side of one run: strategy, UPS score cache and schedule."""

    def __init__(self, lead: ConfigSpec, ds: Dataset, seed: int):
        self.ds, self.seed = ds, seed
        self.strategy = resolve_strategy(ds.spec, lead.strategy)
        self.lead = lead
        schedule = FullPoolSchedule.parse(lead.full_iterations, every=lead.full_every, enabled=lead.ups)
        self.ups = UPSConfig(lead.gamma, lead.temperature, schedule)
        self.cache = ScoreCache.empty()

    def _score(self, acq: Learner, idx: np.ndarray, labeled: np.ndarray, it: int) -> np.ndarray:
        texts = [self.ds.pool.examples[i].text for i in idx]
        if self.strategy == "random":
            return random_scores(len(texts), np.random.default_rng(self.seed * 7919 + it))
        fit = None
        if self.strategy == "mahalanobis":
            gold = [self.ds.pool.examples[i] for i in labeled]
            emb = acq.predict([e.text for e in gold], embeddings=True).embeddings
            fit = fit_mahalanobis(emb, np.array([e.label_ids[0] for e in gold]))
        preds = acq.predict(texts, embeddings=self.strategy == "mahalanobis")
        return uncertainty(preds, self.ds.spec, self.strategy, seed=self.seed + it, fit=fit)

    def query(self, acq: Learner, labeled: np.ndarray, budget: int, it: int,
              measure: bool) -> tuple[np.ndarray, dict, np.ndarray | None]:
        """(query pool positions, record fields, fresh full-pool uncertainty by pool position or None).

        The round is the product's (`albackend.algorithms.ups.round`: the backend's
        `albackend.services.rescoring.rescore_pool` runs the same plan and chunked scoring), with this learner's inference injected; pool positions play task ids."""
        n = len(self.ds.pool)
        unlabeled = np.setdiff1d(np.arange(n), labeled)
        t0 = time.perf_counter()
        plan = plan_round(self.cache, unlabeled, it, self.ups, self.seed)
        t1 = time.perf_counter()
        fig = run_round(self.cache, plan, lambda ids: (self._score(acq, ids, labeled, it), None), f"it{it}",
                        first_chunk=len(plan.order), chunk_size=len(plan.order))
        t2 = time.perf_counter()
        selected = np.sort(plan.order)
        cached, _ = self.cache.lookup(unlabeled)
        query = unlabeled[self.select(cached.astype(np.float64), unlabeled, budget)]
        t3 = time.perf_counter()
        rec = {"full_pool": plan.full, "pool_size": int(unlabeled.size), "n_scored": int(selected.size),
               "scoring_s": fig["score_s"], "select_s": (t1 - t0) + (t3 - t2) + (t2 - t1 - fig["score_s"]),
               "measure_s": 0.0}
        fresh = None
        if plan.full:
            fresh = np.full(n, np.nan)
            fresh[selected], _ = self.cache.lookup(selected)
        elif measure and self.strategy != "random":
            t4 = time.perf_counter()
            fresh = np.full(n, np.nan)
            fresh[unlabeled] = self._score(acq, unlabeled, labeled, it)
            rec["measure_s"] = time.perf_counter() - t4
        if fresh is not None and not plan.full:
            standard = unlabeled[self.select(fresh[unlabeled], unlabeled, budget)]
            rec["ups_recall"] = share_in(standard, selected)
            rec["query_vs_standard"] = share_in(query, standard)
        return query, rec, fresh

    def select(self, unc: np.ndarray, unlabeled: np.ndarray, budget: int) -> np.ndarray:
        """Positions into ``unlabeled`` of the query: top-k instances, or the word budget for tagging."""
        if self.ds.kind == "tagging":
            return select_by_token_budget(unc, self.ds.pool.lengths()[unlabeled], budget)
        return select_top_k(unc, min(budget, unc.size))


def _successor(cfg: ConfigSpec, ds: Dataset, st: Settings) -> Learner:
    if cfg.plasm:
        from bench.emulation.plasm_adapter import PlasmLearner

        return PlasmLearner(cfg, ds, st)
    return make_learner(cfg.successor, ds.spec, opts=st.successor_train, classical=st.classical, device=st.device)


def run_group(ds: Dataset, group: list[ConfigSpec], seed: int, st: Settings,
              tick: Callable[[str], None] = lambda msg: None) -> list[dict]:
    """All iterations of one seed for configurations sharing an acquisition key; one record per config × it."""
    lead = group[0]
    scorer = Scorer(lead, ds, seed)
    acq = make_learner(lead.acquisition, ds.spec, opts=st.acquisition_train, classical=st.classical,
                       device=st.device)
    seed_budget, query_budget = budgets(ds, st)
    t0 = time.perf_counter()
    labeled = seed_set(ds, seed_budget, seed_order(ds, lead, st, seed))
    seed_set_s = time.perf_counter() - t0
    signals = StopSignals(ds, labeled, st.stop_sample, seed)
    lengths = ds.pool.lengths()
    successors = {c.name: _successor(c, ds, st) for c in group if c.successor != ACQ or c.plasm}
    # random sampling needs no model: train the acquisition model only when it scores or is evaluated
    needs_acq = scorer.strategy != "random" or any(c.successor == ACQ and not c.plasm for c in group)
    records: list[dict] = []
    prev_fresh: np.ndarray | None = None
    measure = st.measure_overlap
    for it in range(st.iterations):
        gold = [ds.pool.examples[i] for i in labeled]
        base = {"seed": seed, "iteration": it, "n_labeled": int(labeled.size),
                "n_labeled_words": int(lengths[labeled].sum()), "acquisition": lead.acquisition,
                "strategy": scorer.strategy, "ups": lead.ups, "seed_set": lead.seed_set,
                "seed_set_s": seed_set_s if it == 0 else 0.0}
        t0 = time.perf_counter()
        if needs_acq:
            tick(f"seed {seed} it {it}: train {lead.acquisition}")
            acq.fit(gold, seed=seed * 1000 + it)
            base["train_s"] = time.perf_counter() - t0
            base.update(signals.observe(acq))  # the stopping criteria's stop set (bench/emulation/stopping.py)
        else:
            base["train_s"] = 0.0
        metrics: dict[str, dict] = {}
        for cfg in group:
            if cfg.successor == ACQ and not cfg.plasm:
                learner, fit_s = acq, 0.0
            else:
                learner = successors[cfg.name]
                tick(f"seed {seed} it {it}: {cfg.name} successor")
                t1 = time.perf_counter()
                if cfg.plasm:  # PLASM pseudo-labels (a subset of) the pool items not labeled yet
                    learner.fit(gold, seed=seed * 1000 + it, labeled=labeled)
                else:
                    learner.fit(gold, seed=seed * 1000 + it)
                fit_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            metric = evaluate(learner, ds.test, ds.kind)
            m = {"metric": metric, "successor_train_s": fit_s, "eval_s": time.perf_counter() - t2}
            if cfg.plasm:
                m["plasm"] = getattr(learner, "last_report", None)
            if learner is not acq:
                learner.release()
            metrics[cfg.name] = m
        if it < st.iterations - 1:
            tick(f"seed {seed} it {it}: score pool")
            query, qrec, fresh = scorer.query(acq, labeled, query_budget, it, measure)
            base.update(qrec, **(signals.prequential(acq, query) if needs_acq else {}))
            base["iteration_s"] = base["train_s"] + qrec["scoring_s"] + qrec["select_s"]
            if prev_fresh is not None and fresh is not None and scorer.strategy != "random":
                unlabeled = np.setdiff1d(np.arange(len(ds.pool)), labeled)
                standard = unlabeled[scorer.select(fresh[unlabeled], unlabeled, query_budget)]
                base["topk_overlap"] = topk_overlap(standard, prev_fresh, unlabeled)
            prev_fresh = fresh
            labeled = np.union1d(labeled, query)
        else:
            base["iteration_s"] = base["train_s"]
        if it == st.iterations - 1:
            acq.release()
        for cfg in group:
            records.append({"config": cfg.name, "group": "+".join(c.name for c in group), **base,
                            "metric_name": "accuracy" if ds.kind == "classification" else "f1",
                            **metrics[cfg.name]})
    return records
