"""A small Label Studio 1.23 REST client for tests: a legacy key (``Authorization: Token <key>``) or a personal
access token (exchanged at ``POST /api/token/refresh/`` for an access token sent as ``Authorization: Bearer``,
refreshed on a 401). It is written apart from the backend's own client (albackend.adapters.lsclient) so the two check
each other.

Every method was checked against a real LS 1.23.2 (``tests/support/test_harness.py``). Quirks found there:

- ``POST /api/projects``: ``title`` needs >= 3 characters (400 otherwise). The project's ``model_version`` starts
  as ``""``; connecting an ML backend (``POST /api/ml``) sets it to the backend's *title* only while it is empty.
- ``PATCH /api/projects/{id} {"model_version": v}`` is validated: ``v`` must be an ML backend *title* of the
  project or the ``model_version`` of an existing prediction in the project, else 400 "Model version doesn't
  exist either as live model or as static predictions." (the ML backend's own ``model_version`` field does not
  count). So predictions of a version must be pushed before the project can be switched to it.
- ``POST /api/projects/{id}/import`` with a JSON list -> 201 ``{"task_count", "annotation_count",
  "prediction_count", "duration", "file_upload_ids", "could_be_tasks_list", "found_formats", "data_columns"}``;
  with ``?return_task_ids=true`` it adds ``"task_ids": [...]``.
- ``GET /api/tasks?project=ID`` -> ``{"total_annotations", "total_predictions", "total", "tasks": [...]}``
  (an object, not a DRF page). Without ``fields=all`` the tasks carry no ``annotations``/``predictions`` lists;
  with it each task has ``predictions: [{id, result, model_version, score, task, project, ...}]``,
  ``annotations: [...]``, ``is_labeled``, ``data``. A ``page`` past the end answers 404 "Invalid page.".
  ``project`` must be a digit string (400 otherwise).
- ``GET /api/predictions?project=ID`` (or ``?task=ID``) -> a plain JSON list of predictions
  ``{id, result, model_version, score, task, project, created_at, ...}``, not paginated.
- ``POST /api/tasks/{id}/annotations {"result": [...]}`` -> 201 with the annotation (``completed_by`` is the user
  id); the task becomes ``is_labeled``. LS keeps region ``id``s given in the result.
- ``POST /api/ml {"project", "url", "title"}`` -> 201 ``{"id", "state": "CO", "readable_state": "Connected",
  "model_version": <what /setup returned>, "title", "url", ...}``. LS calls ``GET /health`` and ``POST /setup``
  during the call and creates a webhook ``<url>/webhook`` (``send_for_all_actions``) for the project.
- ``POST /api/ml/{id}/train`` -> 200 with an empty body; LS sends ``POST /webhook {"action": "START_TRAINING",
  "project": {...}}`` synchronously before answering. An unknown id gives an HTML 404.
- ``POST /api/dm/actions?id=retrieve_tasks_predictions&project=P`` with ``{"selectedItems": {"all": true,
  "excluded": []}}`` (or ``{"all": false, "included": [ids]}``) -> 200 ``{"processed_items": n, "detail":
  "Retrieved n predictions"}``. LS calls /health, /setup, then /predict only for the selected tasks that have no
  prediction of the /setup model_version yet (labeled tasks included); ``processed_items`` counts the
  selection, not the predictions created.
- ``GET /api/projects/{id}/next`` -> the task dict plus ``"queue"`` (e.g. "Active learning or random queue",
  "Task lock") and ``"unique_lock_id"``; its ``predictions`` are only those of ``project.model_version``.
  It LOCKS the task for the user (TASK_LOCK_TTL, default 86400 s) and keeps returning that locked task until it
  is labeled - so label the served task before expecting /next to re-rank. With sampling "Uncertainty sampling"
  it orders the unlabeled tasks that have a prediction of ``project.model_version`` by that prediction's score,
  lowest first (ties in any order); with none it falls back to random. With nothing left to label it answers
  404 "There are no tasks for <user>" (``next_task`` returns None).
- A bad token gives 401 ``{"detail": "Invalid token."}``; API errors are JSON ``{"status_code", "detail",
  "validation_errors"}``.
- Personal access tokens: a user logged in to LS (session cookie from the ``/user/login/`` form, as in the browser)
  creates one with ``POST /api/token/`` -> 201 ``{"token": "<JWT refresh token>"}`` (409 while the user already
  has a valid one); this is what Account & Settings -> Personal Access Token does.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import requests


class LSAPIError(RuntimeError):
    def __init__(self, response: requests.Response):
        self.response = response
        self.status_code = response.status_code
        body = response.text
        if "<html" in body[:200].lower():
            body = "<html page>"
        super().__init__(f"{response.request.method} {response.url} -> HTTP {response.status_code}: {body[:2000]}")


def is_personal_access_token(token: str) -> bool:
    """LS 1.23 personal access tokens are JWTs: three dot-separated base64url parts, the header ``eyJ...``."""
    return token.startswith("eyJ") and token.count(".") == 2


def create_personal_access_token(url: str, email: str, password: str, timeout: float = 30.0) -> str:
    """Log in through LS's login form (as a browser does) and create the user's personal access token."""
    url = url.rstrip("/")
    s = requests.Session()
    s.get(f"{url}/user/login/", timeout=timeout)  # sets the csrftoken cookie
    r = s.post(f"{url}/user/login/", data={"email": email, "password": password,
                                           "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
               headers={"Referer": f"{url}/user/login/"}, allow_redirects=False, timeout=timeout)
    if r.status_code != 302:
        raise LSAPIError(r)
    r = s.post(f"{url}/api/token/", headers={"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": url},
               timeout=timeout)
    if r.status_code != 201:
        raise LSAPIError(r)
    return r.json()["token"]


class LSClient:
    def __init__(self, url: str, token: str, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._pat = token if is_personal_access_token(token) else None
        if self._pat is None:
            self.session.headers.update({"Authorization": f"Token {token}"})

    @classmethod
    def for_service(cls, service, timeout: float = 120.0) -> "LSClient":
        """Client for a Service returned by services.start_label_studio()."""
        return cls(service.url, service.meta["token"], timeout=timeout)

    # ------------------------------------------------------------------ plumbing
    def _refresh(self) -> None:
        r = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self._pat}, timeout=self.timeout)
        if r.status_code != 200:
            raise LSAPIError(r)
        self.session.headers["Authorization"] = f"Bearer {r.json()['access']}"

    def send(self, method: str, path: str, **kw) -> requests.Response:
        """One request with the token (a personal access token's access token is refreshed on a 401)."""
        kw.setdefault("timeout", self.timeout)
        if self._pat and "Authorization" not in self.session.headers:
            self._refresh()
        r = self.session.request(method, self.url + path, **kw)
        if r.status_code == 401 and self._pat:
            self._refresh()
            r = self.session.request(method, self.url + path, **kw)
        return r

    def request(self, method: str, path: str, *, expect: Iterable[int] | None = None, **kw) -> Any:
        r = self.send(method, path, **kw)
        ok = r.status_code in set(expect) if expect is not None else 200 <= r.status_code < 300
        if not ok:
            raise LSAPIError(r)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw):
        return self.request("PATCH", path, **kw)

    # ------------------------------------------------------------------ users
    def whoami(self) -> dict:
        return self.get("/api/current-user/whoami")

    # ------------------------------------------------------------------ projects
    def create_project(self, title: str, label_config: str, sampling: str | None = "Uncertainty sampling",
                       **fields) -> dict:
        """POST /api/projects -> the project dict (``id``, ``model_version`` == "", ``sampling``, ...).
        ``sampling=None`` leaves LS's default ("Sequential sampling", as a project created in the UI)."""
        if len(title) < 3:
            raise ValueError("Label Studio requires a project title of at least 3 characters")
        body = {"title": title, "label_config": label_config, **fields}
        if sampling is not None:
            body["sampling"] = sampling
        return self.post("/api/projects", json=body)

    def get_project(self, project: int) -> dict:
        return self.get(f"/api/projects/{int(project)}")

    def patch_project(self, project: int, **fields) -> dict:
        """PATCH /api/projects/{id}. ``model_version`` must name an ML backend title or an existing prediction
        version of the project (LS answers 400 otherwise)."""
        return self.patch(f"/api/projects/{int(project)}", json=fields)

    # ------------------------------------------------------------------ tasks
    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        """POST /api/projects/{id}/import with a list of ``{"data": {...}}``; returns the new task ids in order."""
        res = self.post(f"/api/projects/{int(project)}/import", params={"return_task_ids": "true"}, json=tasks)
        ids = res.get("task_ids")
        if ids is None or len(ids) != len(tasks):
            raise AssertionError(f"import returned {res!r} for {len(tasks)} tasks")
        return list(ids)

    def list_tasks(self, project: int, page_size: int = 1000) -> list[dict]:
        """All tasks of the project with ``fields=all`` (``annotations``, ``predictions``, ``is_labeled``)."""
        out: list[dict] = []
        page = 1
        while True:
            res = self.get("/api/tasks", params={"project": int(project), "page_size": page_size, "page": page,
                                                 "fields": "all"})
            tasks = res["tasks"]
            out.extend(tasks)
            if not tasks or len(out) >= res["total"]:
                return out
            page += 1

    def get_task(self, task_id: int) -> dict:
        return self.get(f"/api/tasks/{int(task_id)}")

    # ------------------------------------------------------------------ annotations / predictions
    def create_annotation(self, task_id: int, result: list[dict], **fields) -> dict:
        """POST /api/tasks/{id}/annotations -> the annotation (201)."""
        return self.post(f"/api/tasks/{int(task_id)}/annotations", json={"result": result, **fields})

    def list_annotations(self, task_id: int) -> list[dict]:
        return self.get(f"/api/tasks/{int(task_id)}/annotations")

    def list_predictions(self, project: int | None = None, task: int | None = None) -> list[dict]:
        """GET /api/predictions?project=ID (or task=ID): a plain list of prediction dicts."""
        params = {}
        if project is not None:
            params["project"] = int(project)
        if task is not None:
            params["task"] = int(task)
        return self.get("/api/predictions", params=params)

    def create_prediction(self, task_id: int, result: list[dict], score: float | None = None,
                          model_version: str | None = None) -> dict:
        body: dict[str, Any] = {"task": int(task_id), "result": result}
        if score is not None:
            body["score"] = score
        if model_version is not None:
            body["model_version"] = model_version
        return self.post("/api/predictions", json=body)

    # ------------------------------------------------------------------ ML backends
    def connect_ml(self, project: int, url: str, title: str = "albackend", **fields) -> dict:
        """POST /api/ml: LS calls the backend's /health and /setup and creates its /webhook hook."""
        return self.post("/api/ml", json={"project": int(project), "url": url, "title": title, **fields})

    def list_ml(self, project: int) -> list[dict]:
        return self.get("/api/ml", params={"project": int(project)})

    def train(self, ml_id: int) -> None:
        """POST /api/ml/{id}/train ("Start Training"): LS posts START_TRAINING to the backend's /webhook."""
        self.post(f"/api/ml/{int(ml_id)}/train")

    def get_ml(self, ml_id: int) -> dict:
        """GET /api/ml/{id}: LS checks the backend's /health and /setup first and stores ``state`` from them."""
        return self.get(f"/api/ml/{int(ml_id)}")

    def upload_text_files(self, project: int, files: dict[str, str]) -> list[int]:
        """Upload text files (name -> content), one task each, as the import dialog does with "treat CSV/TSV/TXT as
        a list of tasks" off: ``POST /api/projects/{id}/import?commit_to_project=false`` (multipart) then
        ``POST /api/projects/{id}/reimport {"file_upload_ids", "files_as_tasks_list": false}``. Each task's data is
        ``{<the config's field>: "/data/upload/<project>/<hash>-<name>"}``, served by LS to authenticated users only.
        Returns the new task ids."""
        before = {t["id"] for t in self.list_tasks(project)}
        multipart = [("file", (name, text.encode(), "text/plain")) for name, text in files.items()]
        up = self.post(f"/api/projects/{int(project)}/import", params={"commit_to_project": "false"}, files=multipart)
        self.post(f"/api/projects/{int(project)}/reimport",
                  json={"file_upload_ids": up["file_upload_ids"], "files_as_tasks_list": False})
        return sorted({t["id"] for t in self.list_tasks(project)} - before)

    def list_webhooks(self, project: int) -> list[dict]:
        return self.get("/api/webhooks", params={"project": int(project)})

    def retrieve_predictions(self, project: int, task_ids: list[int] | None = None) -> dict:
        """Data-manager action "Retrieve predictions" on all tasks (or ``task_ids``): LS calls the backend's
        /setup then /predict for the selected tasks lacking a prediction of the /setup model version."""
        selected = ({"all": True, "excluded": []} if task_ids is None
                    else {"all": False, "included": [int(t) for t in task_ids]})
        return self.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": int(project)},
                         json={"selectedItems": selected})

    def next_task(self, project: int) -> dict | None:
        """GET /api/projects/{id}/next (locks the task it returns; see the module docstring)."""
        for pause in (0.5, 1.0, 2.0, 4.0, None):  # LS on SQLite: 500 "database is locked" during a bulk write
            r = self.send("GET", f"/api/projects/{int(project)}/next")
            if r.status_code < 500 or pause is None:
                break
            time.sleep(pause)
        if r.status_code == 404:
            return None  # no more tasks
        if r.status_code != 200:
            raise LSAPIError(r)
        return r.json()
