"""Smoke test of bench/quantized_scoring.py on a tiny random BERT and 80 synthetic texts (the fixtures of
test_bench_smoke.py): every variant scores the whole pool, the figures are consistent, the ranking helpers are
right. No timing assertions."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.bench.test_bench_smoke import BENCH, pool_csv, run_main, tiny_model  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_script():
    spec = importlib.util.spec_from_file_location("bench_quantized_scoring", BENCH / "quantized_scoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quantized_scoring_smoke(tiny_model, pool_csv, tmp_path):  # noqa: F811
    have_onnx = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
    d = run_main("quantized_scoring.py", ["--model", str(tiny_model), "--pool-csv", str(pool_csv), "--pool-size", "0",
                                          "--gold", "16", "--chunks", "3", "--repeats", "2", "--threads", "1",
                                          "--min-steps", "2", "--epochs", "1", "--max-length", "64",
                                          "--batch-size", "8", "--mahalanobis-n", "40"],
                 tmp_path / "q.json")
    assert d["pool_size"] == 80 and d["n_gold"] == 16
    variants = d["runs_by_threads"]["1"]["variants"]
    expected = {"fp32", "int8"} | ({"onnx-fp32", "onnx-int8"} if have_onnx else set())
    assert set(variants) == expected
    assert set(d["skipped"]) == ({"onnx-fp32", "onnx-int8"} - expected)
    fp = variants["fp32"]
    assert fp["speedup"] == 1.0 and fp["spearman_lc"] == pytest.approx(1.0) and fp["passes"] is None
    for name, v in variants.items():
        assert v["tokens"] == fp["tokens"] > 80  # every variant scored the same texts
        assert v["seconds"] > 0 and v["tokens_per_s"] > 0 and len(v["speedup_per_chunk"]) == 3
        assert 0 <= v["top10_overlap"] <= 1 and 0 <= v["argmax_agreement"] <= 1 and isinstance(v["passes"], (bool, type(None)))
    if have_onnx:  # the same weights in ONNX Runtime fp32 compute the same probabilities
        assert variants["onnx-fp32"]["max_abs_dprob"] < 1e-4
    assert variants["int8"]["max_abs_dprob"] > 0  # a real int8 computation
    assert d["recommended_auto"] in ("fp32", "int8")
    assert d["mahalanobis"]["n_texts"] == 40 and -1 <= d["mahalanobis"]["spearman"] <= 1
    assert len(d["load_average_start"]) == 3 and d["runs_by_threads"]["1"]["derive_s"]["int8"] > 0


def test_rank_helpers_match_definitions():
    q = load_script()
    np.testing.assert_array_equal(q.rankdata(np.array([3.0, 1.0, 2.0, 1.0])), [3.0, 0.5, 2.0, 0.5])
    a = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    assert q.spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert q.spearman(a, -a) == pytest.approx(-1.0)
    assert q.spearman(a, np.array([0.1, 0.5, 0.3, 0.7, 0.9])) == pytest.approx(0.9)  # one adjacent swap: 1 - 6*2/120
    big = np.arange(100, dtype=float)
    assert q.top_overlap(big, big) == 1.0
    assert q.top_overlap(big, -big) == 0.0
    assert q.top_overlap(big, np.where(big == 99, -1.0, big)) == 0.9  # the top item dropped out of the top 10
    ref = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    got = q.agreement(ref, ref[:, ::-1], np.array([0, 0, 1]))
    assert got["argmax_agreement"] == 0.0 and got["accuracy"] == 0.0 and got["spearman_lc"] == pytest.approx(1.0)
