"""Cold start: before the first model exists, Label Studio serves a representative, diverse ranking of the pool.

Why: until the first retrain there is no uncertainty, so without this the seed set is whatever Label Studio serves
(random); the first labels are the ones a representative, diverse choice helps most. A cold-start round
(`run_cold_start`) is queued by /setup (connecting the backend) and by TASKS_CREATED, as an RQ job with REDIS_URL
or a thread otherwise (`request_cold_start`); it never runs inside a request. Under the project's training lock
and only while no model is published, it

1. syncs the task mirror (the sync a retrain uses; the first retrain then only fetches what changed);
2. embeds the unlabeled pool with the acquisition model's pretrained encoder (`albackend.services.embeddings`),
   a random sample of COLD_START_SAMPLE tasks first, and ranks it (`albackend.algorithms.coldstart.rank_pool`);
3. pushes that ranking best first as predictions of version ``coldstart-<project>`` through the retrain's
   `albackend.services.publish.Publisher` (first chunk, then PATCH model_version and sampling, the rest in the
   background), then embeds the rest chunk by chunk, `place`s it into the ranking and pushes it — stopping at
   the next chunk once a retrain is queued, since that retrain waits for the lock and its ranking replaces this;
4. keeps the embeddings and scores: /predict answers with them (`cold_start_answers`), a later round only places
   tasks imported since, and every retrain keeps the top of its ranking free of near-duplicates with them.

Every pushed task is recorded in ``coldstart.sqlite`` (the /predict answers too), so no task gets two predictions
of the version. State and figures: ``coldstart.json``, shown in /projects/<id>/status as ``cold_start``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np

from albackend.services import jobs
from albackend.algorithms.coldstart import place, rank_pool
from albackend.domain.examples import TaskError, int64_id, task_text
from albackend.domain.labelconfig import TaskSpec, parse_label_config
from albackend.adapters.lsclient import LabelStudioError, redact
from albackend.services.predstore import PredictionStore
from albackend.services.publish import Publisher
from albackend.adapters.redisconn import RedisError
from albackend.services.rescoring import Pool, pool_of
from albackend.services.embeddings import DATA_FILE, Embed, PoolEmbeddings, default_embed
from albackend.settings import Settings
from albackend.services.store import ModelStore, atomic_write_text, project_key
from albackend.services.tasksync import sync_project
from albackend.services.taskstore import TaskStore
from albackend.services.training import EXPECTED_FAILURES, ls_client
from albackend.algorithms.ups.round import chunk_bounds

log = logging.getLogger(__name__)
JOB_FUNC = "albackend.adapters.rqjobs.cold_start"
STATE_FILE = "coldstart.json"
LEDGER_FILE = "coldstart.sqlite"
STALE_S = 900.0  # a queued/running round silent this long is taken for dead (a killed worker)
RETRY_S = 300.0  # a failed round is retried by /setup after this long
_requests_lock = threading.Lock()


def cold_start_version(project: object) -> str:
    return f"coldstart-{project_key(project)}"


def active_version(settings: Settings, store: ModelStore, project: str) -> str | None:
    """The cold-start version /setup reports while no model exists: once a ranking is stored."""
    if settings.cold_start and (store.project_dir(project) / DATA_FILE).exists():
        return cold_start_version(project)
    return None


def read_state(store: ModelStore, project: str) -> dict | None:
    try:
        state = json.loads((store.project_dir(project) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(store: ModelStore, project: str, state: dict) -> None:
    state["updated_at"] = time.time()
    atomic_write_text(store.project_dir(project) / STATE_FILE, json.dumps(state, default=str))


def why_not(settings: Settings, store: ModelStore, project: str, *, new_tasks: bool = False) -> str | None:
    """None when a cold-start round should be queued now, else the reason it is not.

    /setup asks once (and again after a failure, RETRY_S later); TASKS_CREATED (``new_tasks``) asks whenever no
    round is waiting or running; a queued or running round silent for STALE_S is taken for dead."""
    if not settings.cold_start:
        return "off"
    try:
        ls_client(settings, store, project)
    except LabelStudioError as exc:
        return f"no Label Studio to call back: {exc}"
    if store.current(project) is not None:
        return "a model is published"
    state = read_state(store, project) or {}
    status, age = state.get("state"), time.time() - float(state.get("updated_at") or 0)
    if status in ("queued", "running") and age < STALE_S:
        return "already queued"
    if not new_tasks and (status in ("finished", "skipped") or (status == "failed" and age < RETRY_S)):
        return f"not needed ({status})"
    return None


def request_cold_start(settings: Settings, store: ModelStore, project: str, *, new_tasks: bool = False) -> str:
    """Queue a cold-start round unless `why_not`; returns what was decided. Cheap: a few file reads, then a
    thread start or one RQ enqueue."""
    with _requests_lock:
        reason = why_not(settings, store, project, new_tasks=new_tasks)
        if reason is not None:
            return reason
        _write_state(store, project, {"state": "queued", "queued_at": time.time(),
                                      "trigger": "TASKS_CREATED" if new_tasks else "setup"})
    try:
        if settings.redis_url:
            jobs.rq_queue(settings).enqueue(JOB_FUNC, project, job_timeout=6 * 3600, result_ttl=86400,
                                            failure_ttl=7 * 86400, description=f"cold start project {project}")
        else:
            threading.Thread(target=run_cold_start, args=(settings, store, project), daemon=True,
                             name=f"coldstart-{project}").start()
    except (RedisError, OSError) as exc:
        _write_state(store, project, {"state": "failed", "reason": f"cannot queue the cold start: {exc}"})
        log.warning("project %s: cold start not queued: %s", project, exc)
        return "failed"
    log.info("project %s: cold start queued", project)
    return "queued"


def retrain_waiting(store: ModelStore, project: str) -> bool:
    """Whether a training job of the project is queued (it waits for the lock a cold-start round holds)."""
    return any(j.get("state") == "queued" for j in store.jobs(project, limit=5))


def run_cold_start(settings: Settings, store: ModelStore, project: str, embed: Embed | None = None) -> dict:
    """The cold-start round (RQ job or thread); records its state, never raises."""
    state = {**(read_state(store, project) or {}), "state": "running", "started_at": time.time(), "reason": None,
             "progress": None}
    _write_state(store, project, state)

    def progress(figures: dict) -> None:
        state["progress"] = {**(state.get("progress") or {}), **figures}
        _write_state(store, project, state)

    try:
        with jobs.project_lock(settings, store, project):
            state.update(_round(settings, store, project, embed or default_embed(settings), progress))
    except EXPECTED_FAILURES as exc:  # the reason is the message; anything else is a bug and logs its traceback
        log.warning("project %s: cold start failed: %s", project, exc)
        state.update(state="failed", reason=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a thread or job must record why it stopped
        log.exception("project %s: cold start crashed", project)
        state.update(state="failed", reason=f"{type(exc).__name__}: {exc}")
    if state.get("reason"):
        state["reason"] = redact(str(state["reason"]), [settings.label_studio_api_key])
    state["finished_at"] = time.time()
    state["duration_s"] = round(state["finished_at"] - state["started_at"], 3)
    _write_state(store, project, state)
    log.info("project %s: cold start %s in %.1fs%s", project, state["state"], state["duration_s"],
             f" ({state['reason']})" if state.get("reason") else "")
    return state


def _round(settings: Settings, store: ModelStore, project: str, embed: Embed, progress) -> dict:
    if store.current(project) is not None:
        return {"state": "skipped", "reason": "a model is published: its ranking is served"}
    t0 = time.perf_counter()
    pdir = store.project_dir(project)
    client = ls_client(settings, store, project)
    info, sync = sync_project(client, TaskStore(pdir), project)
    spec = parse_label_config(info.get("label_config", ""))
    pool = pool_of(list(TaskStore(pdir).iter_tasks()), spec, settings.max_text_chars)
    data = PoolEmbeddings.load(pdir, settings.acquisition_model) or PoolEmbeddings(settings.acquisition_model)
    new = np.flatnonzero(data.positions(pool.task_ids) < 0)
    figures = {"version": cold_start_version(project), "encoder": settings.acquisition_model,
               "pool": len(pool.task_ids), "new": len(new), "pool_tasks_without_text": pool.skipped,
               "sync": sync.as_dict(), "seconds": {"sync": round(time.perf_counter() - t0, 3)}}
    if len(new) == 0:
        return {**figures, "state": "skipped", "reason": "every pool task already has its cold-start score"}
    run = _Run(settings, pdir, data, pool, embed, Publisher(client, project, figures["version"], settings, info,
                                                           progress), len(new))
    try:
        if data.ranking is None:
            sample = np.sort(np.random.default_rng(settings.seed).permutation(new)[: settings.cold_start_sample])
            run.rank(sample)
            new = np.setdiff1d(new, sample)
        for start, end in chunk_bounds(len(new), settings.publish_chunk, settings.publish_chunk):
            if retrain_waiting(store, project):  # the first model's ranking is near: do not hold its lock
                figures["stopped"] = f"a retrain is queued; {len(new) - start} pool tasks left unranked"
                break
            run.place(new[start:end])
    finally:
        run.publisher.finish()
    if run.publisher.current_after_s is None:  # every task already answered by /predict: still make it current
        run.publisher.make_current()
    figures["seconds"].update(embed=round(run.embed_s, 3), rank=round(run.rank_s, 3),
                              total=round(time.perf_counter() - t0, 3))
    figures.update(embedded=run.embedded, embed_tasks_per_s=round(run.embedded / max(run.embed_s, 1e-9), 1),
                   near_duplicates_demoted=run.batch.demoted if run.batch else 0)
    return {**figures, **run.publisher.figures(), "state": "finished"}


class _Run:
    """One round's embedding, ranking and pushes: each task pushed once (the ledger), the top kept distinct."""

    def __init__(self, settings: Settings, project_dir: Path, data: PoolEmbeddings, pool: Pool, embed: Embed,
                 publisher: Publisher, total: int):
        self.settings, self.project_dir, self.data, self.pool, self._embed = settings, project_dir, data, pool, embed
        self.publisher, self.total, self.version = publisher, total, publisher.version
        self.ledger = PredictionStore(project_dir / LEDGER_FILE)
        self.batch = self._top_batch() if data.ranking is not None else None
        self.done, self.embedded, self.embed_s, self.rank_s = 0, 0, 0.0, 0.0

    def _top_batch(self):
        return self.data.top_batch(self.settings.near_duplicate_top, self.settings.near_duplicate_threshold)

    def embed(self, rows: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        emb = self._embed([self.pool.texts[i] for i in rows])
        self.embed_s += time.perf_counter() - t
        self.embedded += len(rows)
        return emb

    def rank(self, sample: np.ndarray) -> None:
        """Embed and rank the sample, store it (its rows are the ranking's positions), push it best first."""
        emb = self.embed(sample)
        t = time.perf_counter()
        ranking = rank_pool(emb, top=self.settings.near_duplicate_top,
                            threshold=self.settings.near_duplicate_threshold, seed=self.settings.seed)
        self.rank_s += time.perf_counter() - t
        ids = self.pool.task_ids[sample]
        self.data.ranking, self.data.ranked = ranking, len(ids)
        self.data.add(ids, emb, ranking.scores)
        self.data.save(self.project_dir)
        self.batch = self._top_batch()  # the ranking's top is distinct already (rank_pool)
        best = ranking.order
        for start, end in chunk_bounds(len(ids), self.settings.publish_first_chunk, self.settings.publish_chunk):
            self.push(ids[best[start:end]], ranking.scores[best[start:end]])

    def place(self, rows: np.ndarray) -> None:
        """Embed more pool tasks, place them into the ranking (near-duplicates of the top demoted), push them."""
        emb = self.embed(rows)
        scores = self.batch.admit(place(self.data.ranking, emb), lambda i: emb[i])
        self.data.add(self.pool.task_ids[rows], emb, scores)
        self.data.save(self.project_dir)
        self.push(self.pool.task_ids[rows], scores)

    def push(self, ids: np.ndarray, scores: np.ndarray) -> None:
        known = self.ledger.get([int(t) for t in ids])
        rows = [(int(t), float(s)) for t, s in zip(ids, scores) if known.get(int(t), ("",))[0] != self.version]
        self.done += len(ids)
        if rows:
            self.publisher([{"task": t, "result": [], "score": s, "model_version": self.version} for t, s in rows],
                           self.done, self.total)
            self.ledger.put((t, self.version, s, []) for t, s in rows)


def cold_start_answers(settings: Settings, store: ModelStore, project: str, tasks: list,
                       embed: Embed | None = None) -> list[dict] | None:
    """/predict before the first model: each task's cold-start score (version ``coldstart-<project>``); a task the
    ranking lacks is embedded now and placed into it — unless a batch holds PREDICT_UPS_MIN_TASKS such tasks or
    more ("Retrieve predictions" while a round is still embedding the pool), whose embedding would outlast Label
    Studio's patience: those get the last score, 1.0. Every answer is recorded, so no round pushes the task a
    second prediction of the version. None when there is no ranking yet (cold start off or not done): the caller
    answers as without one."""
    if not settings.cold_start:
        return None
    pdir = store.project_dir(project)
    data = PoolEmbeddings.load(pdir, settings.acquisition_model)
    spec = _spec(pdir)
    if data is None or data.ranking is None or spec is None:
        return None
    version = cold_start_version(project)
    ids = [int64_id(t.get("id")) if isinstance(t, dict) else None for t in tasks]
    at = data.positions(np.array([-1 if i is None else i for i in ids], dtype=np.int64))
    scores = np.ones(len(tasks))  # a task without usable text: served last
    todo, texts = [], []
    for k, task in enumerate(tasks):
        if at[k] >= 0:
            scores[k] = data.scores[at[k]]
            continue
        try:
            texts.append(task_text(task, spec, settings.max_text_chars))
        except TaskError as exc:
            log.info("predict: task %s gets the last cold-start score: %s", ids[k], exc)
            continue
        todo.append(k)
    if todo and len(todo) < settings.predict_ups_min_tasks:
        emb = (embed or default_embed(settings))(texts)
        batch = data.top_batch(settings.near_duplicate_top, settings.near_duplicate_threshold)
        scores[todo] = batch.admit(place(data.ranking, emb), lambda i: emb[i])
    if todo:
        PredictionStore(pdir / LEDGER_FILE).put(
            (ids[k], version, float(scores[k]), []) for k in todo if ids[k] is not None)
    return [{"result": [], "score": float(s), "model_version": version} for s in scores]


def _spec(project_dir: Path) -> TaskSpec | None:
    """The label config /setup stored (which data field holds the text)."""
    try:
        return TaskSpec.from_dict(json.loads((project_dir / "spec.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cold_start_status(store: ModelStore, project: str) -> dict | None:
    """For /projects/<id>/status: the last round's state and figures."""
    return read_state(store, project)
