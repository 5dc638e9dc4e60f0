"""bench/device_bundle.py: a model directory survives pack (fp16, parts) -> unpack (fp32) within fp16 rounding,
the parts are bounded, and a damaged part is refused."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bench.device_bundle import pack, unpack
from tests.support.tiny import make_tiny_bert


def test_pack_unpack_round_trip(tmp_path):
    model = make_tiny_bert(tmp_path / "bert", hidden=32, layers=1)
    extra = tmp_path / "data.csv"
    extra.write_text("text,label\nhello,a\n")
    out, dest = tmp_path / "parts", tmp_path / "there"
    manifest = pack(out, 256 << 10, [(model, "cache/tiny")], [(extra, "data/x/data.csv")])
    assert len(manifest["parts"]) >= 2 and all(p["bytes"] <= 256 << 10 for p in manifest["parts"])
    unpack(out, dest)
    before, after = load_file(str(model / "model.safetensors")), load_file(str(dest / "cache/tiny/model.safetensors"))
    assert before.keys() == after.keys()
    for name, w in before.items():
        assert after[name].dtype == w.dtype  # fp32 again
        if w.dtype == torch.float32:
            assert torch.allclose(after[name], w, rtol=1e-3, atol=1e-7)
    assert (dest / "data/x/data.csv").read_text() == extra.read_text()
    assert json.loads((dest / "cache/tiny/config.json").read_text())["hidden_size"] == 32
    part = out / manifest["parts"][0]["name"]
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(ValueError, match="damaged or incomplete"):
        unpack(out, dest)
