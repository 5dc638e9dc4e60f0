"""Run every (acquisition group × seed) of an emulation, save results incrementally, render the report.

``results.json`` is rewritten after each finished (group, seed), so an interrupted run keeps what it did and
``--resume`` skips the finished pairs. ``report.md`` and the PNG plots are rendered at the end (or with
``--report-only`` from an existing ``results.json``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from albackend.services.store import atomic_write_text, json_default
from bench.emulation.config import ConfigSpec, Settings, group_settings
from bench.emulation.data import Dataset
from bench.emulation.loop import budgets, run_group
from bench.emulation.plots import plot
from bench.emulation.report import markdown

RESULTS = "results.json"
REPORT = "report.md"


def group_configs(configs: list[ConfigSpec]) -> list[list[ConfigSpec]]:
    """Configurations with the same acquisition key share one AL run per seed (order of first appearance)."""
    groups: dict[tuple, list[ConfigSpec]] = {}
    for c in configs:
        groups.setdefault(c.acquisition_key(), []).append(c)
    return list(groups.values())


def machine() -> str:
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        threads = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        dev, threads = "CPU", 0
    return f"{platform.machine()} {os.cpu_count()} cores, torch threads {threads}, {dev}"


def _config_dicts(configs: list[ConfigSpec]) -> list[dict]:
    return [{**dataclasses.asdict(c), "description": c.describe()} for c in configs]


def _write_json(path: Path, data: dict) -> None:
    """Rewritten after every (group, seed): a crash mid-write must not lose the records already there."""
    atomic_write_text(path, json.dumps(data, indent=1, default=json_default))


def run(ds: Dataset, st: Settings, out_dir: Path, *, resume: bool = False, progress: bool = True,
        command: str = "", meta: dict | None = None) -> dict:
    """``meta``: extra facts for ``results.json``'s meta (e.g. the distilled student)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    groups = group_configs(st.configs)
    seed_budget, query_budget = budgets(ds, st)
    unit = "words" if ds.kind == "tagging" else "instances"
    result = {
        "meta": {"command": command or " ".join(sys.argv), "dataset": ds.describe(),
                 "settings": _settings_dict(st), "budgets": {"seed": seed_budget, "query": query_budget,
                                                             "unit": unit},
                 "machine": machine(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "done": [],
                 **(meta or {})},
        "configs": _config_dicts(st.configs),
        "records": [],
    }
    if resume and path.exists():
        old = json.loads(path.read_text())
        result["records"] = old.get("records", [])
        result["meta"]["done"] = old.get("meta", {}).get("done", [])
        result["meta"]["wall_s_before_resume"] = old.get("meta", {}).get("wall_s", 0.0)
        result["meta"]["cpu_s_before_resume"] = old.get("meta", {}).get("cpu_s", 0.0)
        result["meta"]["commands_before_resume"] = (old.get("meta", {}).get("commands_before_resume", [])
                                                    + [old.get("meta", {}).get("command", "")])
    done = {tuple(d) for d in result["meta"]["done"]}
    todo = [(g, s) for s in st.seeds for g in groups if ("+".join(c.name for c in g), s) not in done]
    t0, c0 = time.perf_counter(), time.process_time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) * st.iterations, unit="it", desc=ds.name, dynamic_ncols=True)
    try:
        for group, seed in todo:
            gname = "+".join(c.name for c in group)
            last_it = [-1]

            def tick(msg: str, gname=gname, last_it=last_it) -> None:
                if bar is None:
                    return
                it = int(msg.split(" it ")[1].split(":")[0])
                if it != last_it[0] and last_it[0] >= 0:
                    bar.update(1)
                last_it[0] = it
                bar.set_postfix_str(f"{gname} | {msg}", refresh=True)

            records = run_group(ds, group, seed, group_settings(st, group[0]), tick)
            if bar is not None:
                bar.update(1)
                last = [r for r in records if r["iteration"] == st.iterations - 1]
                bar.write(f"[{ds.name}] seed {seed} {gname}: final " +
                          ", ".join(f"{r['config']}={r['metric']:.3f}" for r in last))
            result["records"] = [r for r in result["records"] if not (r["group"] == gname and r["seed"] == seed)]
            result["records"] += records
            result["meta"]["done"].append([gname, seed])
            result["meta"]["wall_s"] = result["meta"].get("wall_s_before_resume", 0.0) + time.perf_counter() - t0
            result["meta"]["cpu_s"] = result["meta"].get("cpu_s_before_resume", 0.0) + time.process_time() - c0
            _write_json(path, result)
    finally:
        if bar is not None:
            bar.close()
    result["meta"]["wall_s"] = result["meta"].get("wall_s_before_resume", 0.0) + time.perf_counter() - t0
    result["meta"]["cpu_s"] = result["meta"].get("cpu_s_before_resume", 0.0) + time.process_time() - c0
    result["meta"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(path, result)
    render(result, out_dir)
    return result


# settings that may differ between the parts of one experiment run in parallel: which seeds / configurations a
# process ran, and where its distilled student lives (a path; its recipe is compared through meta "student")
_PART_KEYS = ("seeds", "acquisition")


def _comparable(result: dict) -> dict:
    meta = result.get("meta", {})
    settings = {k: v for k, v in meta.get("settings", {}).items() if k not in _PART_KEYS}
    student = {k: v for k, v in (meta.get("student") or {}).items() if k not in ("dir", "command", "reused",
                                                                               "train_seconds")}
    return {"dataset": meta.get("dataset"), "settings": settings, "budgets": meta.get("budgets"), "student": student}


def merge_results(parts: list[dict]) -> dict:
    """One results.json from runs of the same experiment split over processes (e.g. a seed each, so both cores
    work): records and finished (group, seed) pairs are united; wall and CPU seconds are summed (the cost, not
    the elapsed time). Parts with a different dataset, recipe or student are refused, and so is a (group, seed)
    finished in two parts, since their records could silently disagree."""
    if not parts:
        raise ValueError("nothing to merge")
    ref = _comparable(parts[0])
    done: list = []
    records: list[dict] = []
    configs: dict[str, dict] = {}
    for i, part in enumerate(parts):
        mine = _comparable(part)
        if mine != ref:
            diff = [k for k, v in mine.items() if v != ref[k]]
            raise ValueError(f"part {i + 1} is another experiment: its {', '.join(diff)} differ from part 1")
        for pair in part["meta"].get("done", []):
            if pair in done:
                raise ValueError(f"group {pair[0]!r} seed {pair[1]} is finished in two parts")
            done.append(pair)
        finished = {tuple(d) for d in part["meta"].get("done", [])}
        records += [r for r in part["records"] if (r["group"], r["seed"]) in finished]
        for c in part.get("configs", []):
            configs.setdefault(c["name"], c)
    # part 1's meta minus what only described part 1 (its command and resumes): the parts' commands are listed
    own = ("command", "commands_before_resume", "wall_s_before_resume", "cpu_s_before_resume", "finished_at")
    meta = {**{k: v for k, v in parts[0]["meta"].items() if k not in own}, "done": done,
            "merged_from": [p["meta"].get("command", "") for p in parts],
            "wall_s": sum(p["meta"].get("wall_s", 0.0) for p in parts),
            "cpu_s": sum(p["meta"].get("cpu_s", 0.0) for p in parts)}
    meta["settings"] = {**meta["settings"], "seeds": sorted({s for _, s in done})}
    return {"meta": meta, "configs": list(configs.values()), "records": records}


def merge_dirs(parts: list[Path], out_dir: Path) -> dict:
    """:func:`merge_results` of the parts' results.json, written to ``out_dir`` with its report."""
    files = [d / RESULTS for d in parts]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no results: {', '.join(missing)}")
    result = merge_results([json.loads(f.read_text()) for f in files])
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / RESULTS, result)
    render(result, out_dir)
    return result


def render(result: dict, out_dir: Path) -> dict[str, str]:
    """Write report.md and the PNGs next to results.json; returns the plot file names."""
    plots = plot(result, out_dir) if result["records"] else {}
    (out_dir / REPORT).write_text(markdown(result, plots) if result["records"] else "# no records\n")
    return plots


def _settings_dict(st: Settings) -> dict:
    d = dataclasses.asdict(st)
    d.pop("configs", None)
    return d
