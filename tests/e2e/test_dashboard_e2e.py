"""End to end with a real Label Studio and a real headless Chromium: annotations of tasks that carried the backend's
predictions become the prequential agreement of that model version on `/projects/<id>`, in /metrics and in the
one-line summary on Label Studio's ML backend record.

AG News classification: label a seed set, connect the backend, Start Training (iteration 0: predictions of v0 are
pushed to every unlabeled task), annotate four of those tasks through LS's API (LS sends ANNOTATION_CREATED
webhooks), then: the dashboard shows v0's agreement with exactly the accuracy of LS's stored v0 predictions
against those annotations; Chromium renders the page (the DOM holds the plots' SVG; a screenshot is kept under
tests/artifacts/); a second Start Training writes "it 1 · agreement … (n=4)" into the ML backend's title.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from tests.support import browser, services
from tests.support.datasets import CLASSIFICATION_CONFIG, agnews_tasks, choices_result

pytestmark = [pytest.mark.labelstudio, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
N_TASKS, N_SEED, N_JUDGED = 24, 8, 4


@pytest.fixture(scope="module")
def backend(label_studio, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("dash-backend")
    env = {"MODEL_DIR": str(root / "models"), "LABEL_STUDIO_URL": label_studio.url,
           "LABEL_STUDIO_API_KEY": label_studio.meta["token"], "ACQUISITION_MODEL": "splade-tiny",
           "TRAIN_EPOCHS": "2", "TRAIN_MIN_STEPS": "30", "RETRAIN_EVERY": "100", "STOP_SAMPLE_SIZE": "10",
           "KEEP_PREDICTION_VERSIONS": "1", "SEED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    stack = services.start_backend(env, root / "logs", workers=1, threads=8)  # in-process queue, no Redis
    yield stack
    stack.stop()


def wait_trained(backend, project: int, iteration: int, known: set) -> dict:
    """The project's status once a job not in ``known`` finished at ``iteration`` and nothing is queued."""
    def done():
        backend.check_alive()
        st = requests.get(f"{backend.url}/projects/{project}/status", timeout=10).json()
        new = [j for j in st["jobs"] if j["id"] not in known]
        failed = [j for j in new if j["state"] == "failed"]
        assert not failed, f"training failed: {failed[0].get('reason')}\n{backend.logs()}"
        busy = any(j["state"] in ("queued", "running") for j in st["jobs"])
        it = (st.get("last_training") or {}).get("iteration")
        return st if not busy and new and it is not None and it >= iteration else None
    return services.wait_until(done, 300, 1.0, f"training iteration {iteration}", on_timeout=backend.logs)


def test_annotations_become_the_versions_agreement_on_the_dashboard(backend, label_studio, ls_client, chromium):
    ls = ls_client
    tasks, gold_list = agnews_tasks(N_TASKS, seed=5)
    pid = ls.create_project("dashboard e2e", CLASSIFICATION_CONFIG, sampling="Uncertainty sampling")["id"]
    ids = ls.import_tasks(pid, tasks)
    gold = dict(zip(ids, gold_list))
    for tid in ids[:N_SEED]:
        ls.create_annotation(tid, choices_result(gold[tid]))
    ml = ls.connect_ml(pid, backend.url, title="al backend")
    ls.train(ml["id"])
    st = wait_trained(backend, pid, 0, set())
    v0 = st["last_training"]["model_version"]
    record = next(b for b in ls.list_ml(pid) if b["id"] == ml["id"])
    assert record["title"] == "al backend · it 0 · agreement – · stop: not yet"
    assert "Summary: " + record["title"].split(" · ", 1)[1] in record["description"].splitlines()

    # annotate tasks that carry a v0 prediction; LS posts ANNOTATION_CREATED to the backend's /webhook
    shown = {p["task"]: p["result"][0]["value"]["choices"][0] for p in ls.list_predictions(pid)
             if p["model_version"] == v0}
    judged = [t for t in ids[N_SEED:] if t in shown][:N_JUDGED]
    for tid in judged:
        ls.create_annotation(tid, choices_result(gold[tid]))
    accuracy = sum(shown[t] == gold[t] for t in judged) / N_JUDGED
    row = rf'<tr><td class="?l"?>{v0}</td><td>0</td><td>{N_JUDGED}</td><td>{accuracy:.3f}</td>'  # served or DOM
    page = f"{backend.url}/projects/{pid}"
    html = services.wait_until(lambda: (lambda h: h if re.search(row, h) else None)(requests.get(page).text),
                               30, 0.5, "the dashboard to show v0's agreement", on_timeout=backend.logs)
    assert f"<b>{accuracy:.2f}</b> over the last {N_JUDGED} annotations" in html
    t0 = time.perf_counter()
    requests.get(page, timeout=10).raise_for_status()  # every plot cached by now
    print(f"[dashboard e2e] page served in {(time.perf_counter() - t0) * 1000:.0f} ms")
    metrics = requests.get(f"{backend.url}/metrics", timeout=10).text
    assert f'albackend_prequential_annotations{{project="{pid}"}} {float(N_JUDGED)}' in metrics

    # a real browser renders it: the plots are SVG in the DOM; the screenshot is kept as an artefact
    t0 = time.perf_counter()
    dom = browser.dump_dom(page)
    assert re.search(row, dom) and len(re.findall(r"<svg\b", dom)) >= 5, dom[:2000]
    assert len(re.findall(r"<path\b", dom)) > 100  # the plots' lines, bars and glyphs, not empty frames
    shot = browser.screenshot(page, ARTIFACTS / "dashboard_e2e.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"[dashboard e2e] chromium: {time.perf_counter() - t0:.1f} s, screenshot {shot}")

    # the next retrain writes the agreement into the ML backend's title in Label Studio
    ls.train(ml["id"])
    wait_trained(backend, pid, 1, {j["id"] for j in st["jobs"]})
    record = next(b for b in ls.list_ml(pid) if b["id"] == ml["id"])
    assert record["title"].startswith(f"al backend · it 1 · agreement {accuracy:.2f} (n={N_JUDGED}) · stop: ")
    assert ls.get_project(pid)["model_version"].startswith(f"al-{pid}-it1-")  # predictions still attached
