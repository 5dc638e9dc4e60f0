"""Smoke tests for the benchmarks in bench/: each script runs end to end on a tiny random BERT and a few dozen
synthetic texts, so the scripts cannot rot. No timing assertions: only that the JSON has the expected keys and
sane values (counts add up, ratios > 0, the baselines compute the same probabilities).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import services
from tests.support.tiny import make_tiny_bert

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench"
LABELS = ["World", "Sports", "Business", "Sci/Tech"]
WORDS = {
    "World": "minister election border talks capital troops treaty",
    "Sports": "match season coach goal league final score",
    "Business": "shares profit market bank deal quarter oil",
    "Sci/Tech": "software chip internet research space phone data",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bench-tiny") / "bert")


@pytest.fixture(scope="module")
def pool_csv(tmp_path_factory) -> Path:
    """80 short texts, 20 per class, sorted by label like the real AG News pool file."""
    path = tmp_path_factory.mktemp("bench-data") / "pool.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label", "label_name"])
        for j, name in enumerate(LABELS):
            words = WORDS[name].split()
            for i in range(20):
                text = " ".join(words[(i + k) % len(words)] for k in range(3 + i % 9)) + f" report {i}."
                w.writerow([text, j, name])
    return path


def run_main(name: str, args: list[str], out: Path) -> dict:
    """Import bench/<name> and call its main(argv) in this process (saves the torch import of a subprocess)."""
    saved = list(sys.path)  # the script puts bench/ first on sys.path: do not leak it into later tests
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{Path(name).stem}", BENCH / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main([*args, "--out", str(out)])
    finally:
        sys.path[:] = saved
    assert out.is_file()
    return json.loads(out.read_text())


def run_script(name: str, args: list[str], out: Path, timeout: float = 240) -> dict:
    cmd = [sys.executable, str(BENCH / name), *args, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=services.backend_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    assert out.is_file(), proc.stdout[-2000:]
    return json.loads(out.read_text())


def test_scoring_smoke(tiny_model, pool_csv, tmp_path):
    d = run_main("scoring.py", ["--model", str(tiny_model), "--pool-csv", str(pool_csv), "--pool-size", "0",
                                  "--seed-frac", "0.1", "--n", "24", "--repeats", "1", "--ups-repeats", "1",
                                  "--min-steps", "2", "--epochs", "1", "--max-length", "64", "--batch-size", "8",
                                  "--matmul-size", "128", "--matmul-seconds", "0.05"],
                 tmp_path / "scoring.json")
    fu = d["full_vs_ups"]
    assert fu["full"]["full_pool"] is True and fu["ups"]["full_pool"] is False
    assert fu["full"]["scored"] == fu["pool_size"] == 80
    assert 0 < fu["ups"]["scored"] < fu["full"]["scored"]
    assert fu["time_ratio_full_over_ups"] > 0 and fu["whole_call_ratio_full_over_ups"] > 0
    for k in ("full", "ups"):
        assert fu["tasks_per_s"][k] > 0 and fu["tokens_per_s"][k] > 0
    methods = d["optimized_vs_naive"]["methods"]
    assert len(methods) == 4 and d["optimized_vs_naive"]["n_texts"] == 24
    for name, m in methods.items():
        assert m["best_s"] > 0 and m["speedup_of_optimized"] > 0, name
        assert m["padding_overhead"] >= 1.0, name
        assert m["max_abs_prob_diff"] < 1e-3, f"{name} computes different probabilities"
    assert d["matmul"]["fp32_gflops"] > 0
    fl = d["flops"]
    assert fl["params_non_embedding"] > 0 and fl["flops_per_token_at_mean_length"] > 2 * fl["params_non_embedding"]
    assert fl["subset_optimized_fraction_of_peak_useful"] > 0 and fl["full_pool_fraction_of_peak_useful"] > 0


def test_iteration_smoke(tiny_model, pool_csv, tmp_path):
    d = run_main("iteration.py", ["--standard-model", str(tiny_model), "--small-model", str(tiny_model),
                                    "--pool-csv", str(pool_csv), "--pool-size", "0", "--seed-frac", "0.1",
                                    "--query-frac", "0.05", "--min-steps", "2", "--epochs", "1",
                                    "--max-length", "64", "--batch-size", "8"], tmp_path / "iteration.json")
    c = d["configs"]
    assert set(c) == {"standard", "plasm_ups", "plasm_only"}
    assert d["labeled"] == 8 + 4 and d["unlabeled"] == 80 - 12
    assert c["standard"]["inference"]["scored"] == c["plasm_only"]["inference"]["scored"] == d["unlabeled"]
    assert 0 < c["plasm_ups"]["inference"]["scored"] < d["unlabeled"]
    for v in c.values():
        assert v["train_s"] > 0 and v["inference_s"] > 0 and v["overall_s"] > 0
    assert d["speedup_overall"] > 0 and d["ups_inference_speedup_same_model"] > 0
    assert d["reduction"] < 1 and 0.6 < d["paper_reduction"]["overall"] < 0.65


def test_endpoints_smoke(tiny_model, pool_csv, tmp_path):
    """gunicorn + in-process queue, a published tiny model, a separate training process as load."""
    n = 5
    d = run_script("endpoints.py", ["--model", str(tiny_model), "--pool-csv", str(pool_csv), "--load", "process",
                                    "--n", str(n), "--tasks", "40", "--seed-labels", "8", "--train-min-steps", "2",
                                    "--train-epochs", "1", "--max-length", "64", "--max-phase-s", "60"],
                   tmp_path / "endpoints.json")
    assert d["load_mode"] == "process" and d["queue"] == "in-process"
    for kind in ("predict", "webhook_ignored"):
        assert d["idle"][kind]["n"] >= n and d["idle"][kind]["errors"] == 0
        assert 0 < d["idle"][kind]["p50_ms"] <= d["idle"][kind]["p99_ms"]
    for kind in ("predict", "webhook_train", "webhook_ignored"):
        assert d["load"][kind]["n"] >= n and d["load"][kind]["errors"] == 0, d["load_info"]
        assert d["ratio_load_over_idle"].get(kind, d["ratio_load_over_idle"]["webhook_train_vs_idle_ignored"])["p50"] > 0
    assert d["load_info"]["load_process_alive_at_end"] is True
    assert "/predict" in d["server_metrics"]


@pytest.mark.slow
@pytest.mark.labelstudio
@pytest.mark.skipif(not services.have_label_studio(), reason="Label Studio venv not found (LS_VENV / .venv-ls)")
def test_endpoints_label_studio_flow(tiny_model, pool_csv, tmp_path):
    """The real flow: Label Studio drives the backend's own training jobs as the load."""
    n = 5
    d = run_script("endpoints.py", ["--model", str(tiny_model), "--pool-csv", str(pool_csv), "--load", "ls",
                                    "--n", str(n), "--tasks", "40", "--seed-labels", "8", "--train-min-steps", "2",
                                    "--train-epochs", "1", "--max-length", "64", "--max-phase-s", "120"],
                   tmp_path / "endpoints.json", timeout=600)
    assert d["load_mode"] == "ls"
    assert d["load_info"]["training_jobs_overlapping"] >= 1
    assert d["load"]["predict"]["n"] >= 1 and d["load"]["predict"]["errors"] == 0


@pytest.mark.redis
def test_shard_scoring_smoke(tiny_model, pool_csv, tmp_path):
    d = run_script("shard_scoring.py", ["--model", str(tiny_model), "--pool-csv", str(pool_csv), "--pool", "80",
                                        "--shard-size", "20", "--helpers", "1"], tmp_path / "shard.json")
    runs = list(d["runs"].values())
    assert [r["shards"] for r in runs] == [4, 4] and runs[0]["by_helpers"] == 0 and d["speedup"] > 0


@pytest.mark.labelstudio
@pytest.mark.redis
def test_live_loop_smoke(tiny_model, pool_csv, tmp_path):
    d = run_script("live_loop.py", ["--model", str(tiny_model), "--pool-csv", str(pool_csv), "--pool", "120",
                                    "--seed-labels", "12", "--per-iteration", "3", "--iterations", "3",
                                    "--web-workers", "1", "--env", "TRAIN_MIN_STEPS=4", "--env", "TRAIN_EPOCHS=1",
                                    "--env", "PUBLISH_FIRST_CHUNK=10"], tmp_path / "live.json", timeout=600)
    its = d["iterations"]
    assert [r["iteration"] for r in its] == [0, 1, 2] and all(r["next_has_new_version"] for r in its)
    assert [r["sync_mode"] for r in its] == ["full", "incremental", "incremental"]
    assert its[0]["scored"] == its[0]["pool_size"] == 108 and its[2]["scored"] < its[2]["pool_size"]
    assert all(r["predictions_in_ls"] <= 2 * 120 for r in its), its  # current + KEEP_PREDICTION_VERSIONS=1
    assert d["project_sampling_after"] == "Uncertainty sampling"


def test_cold_ner_smoke(tiny_model, tmp_path):
    rows = []
    for i in range(30):
        name, city = ["John", "Maria", "Li"][i % 3], ["Paris", "Tokyo", "Lagos"][i % 3]
        rows += [f"{name} B-PER", "flew O", "to O", f"{city} B-LOC", "today O", ""]
    conll = tmp_path / "toy.conll"
    conll.write_text("\n".join(rows) + "\n", encoding="utf-8")
    d = run_main("cold_ner.py", ["--model", str(tiny_model), "--train", str(conll), "--test", str(conll),
                                 "--test-size", "10", "--sizes", "4,8", "--seeds", "0", "--recipes",
                                 "before,product,o_weight", "--max-steps", "2"], tmp_path / "cold.json")
    assert [(r["recipe"], r["n_train"]) for r in d["runs"]] == [
        (r, n) for r in ("before", "product", "o_weight") for n in (4, 8)]
    assert all(r["gold_spans"] == 20 and r["steps"] == 2 and 0 <= r["f1"] <= 1 for r in d["runs"])
    assert d["product"]["head_lr"] > d["product"]["lr"] and d["before"]["lr"] == 5e-5
    assert {(s["recipe"], s["n_train"]) for s in d["summary"]} == {(r["recipe"], r["n_train"]) for r in d["runs"]}
