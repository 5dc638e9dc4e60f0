"""Aggregate emulation records into the report: curves, comparisons, the Table 1 analogue, and Markdown.

Everything here works from the records alone, so ``python bench/emulate.py --report-only OUT`` re-renders a
report from ``OUT/results.json`` (e.g. after a partial or resumed run).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from bench.emulation.metrics import TOP_K_PERCENTS
from bench.emulation.stopping import stopping_markdown


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _by(records: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        out[tuple(r.get(k) for k in keys)].append(r)
    return out


def config_order(records: list[dict], configs: list[dict]) -> list[str]:
    names = [c["name"] for c in configs]
    return [n for n in names if any(r["config"] == n for r in records)]


def curves(records: list[dict], names: list[str]) -> dict[str, list[dict]]:
    """Per configuration and iteration: labeled size, metric mean/std over seeds, mean timings."""
    out = {}
    groups = _by(records, "config", "iteration")
    for name in names:
        rows = []
        its = sorted({r["iteration"] for r in records if r["config"] == name})
        for it in its:
            rs = groups[(name, it)]
            m, s, n = _mean_std([r["metric"] for r in rs])
            row = {"iteration": it, "n_labeled": _mean_std([r["n_labeled"] for r in rs])[0],
                   "n_labeled_words": _mean_std([r["n_labeled_words"] for r in rs])[0],
                   "metric": m, "std": s, "seeds": n}
            for key in ("train_s", "scoring_s", "select_s", "measure_s", "n_scored", "pool_size", "iteration_s",
                        "successor_train_s", "eval_s", "ups_recall", "query_vs_standard"):
                vals = [r[key] for r in rs if key in r]
                if vals:
                    row[key] = _mean_std(vals)[0]
                    row[key + "_std"] = _mean_std(vals)[1]
            rows.append(row)
        out[name] = rows
    return out


def acquisition_groups(records: list[dict], names: list[str]) -> dict[str, str]:
    """AL-run group name -> its first configuration (configs of one group share every acquisition field)."""
    groups: dict[str, str] = {}
    for n in names:
        g = next(r.get("group", n) for r in records if r["config"] == n)
        groups.setdefault(g, n)
    return groups


def overlap_names(records: list[dict], names: list[str]) -> dict[str, str]:
    """Group name -> config with a Table 1 statistic; random sampling has no uncertainty ranking to compare."""
    out = {}
    for g, n in acquisition_groups(records, names).items():
        if all(r.get("strategy") != "random" for r in records if r["config"] == n) and overlap_table(records, n):
            out[g] = n
    return out


def overlap_table(records: list[dict], name: str) -> dict[int, dict[str, tuple[float, float]]]:
    """Table 1 analogue of one configuration: iteration -> k -> (mean, std) over seeds."""
    table: dict[int, dict[str, tuple[float, float]]] = {}
    for (cfg, it), rs in sorted(_by(records, "config", "iteration").items(), key=lambda kv: kv[0][1]):
        if cfg != name:
            continue
        vals = [r["topk_overlap"] for r in rs if r.get("topk_overlap")]
        if vals:
            table[it] = {str(k): _mean_std([v.get(str(k)) for v in vals])[:2] for k in TOP_K_PERCENTS}
    return table


def _totals(records: list[dict], name: str, key: str) -> tuple[float, float]:
    per_seed = defaultdict(float)
    for r in records:
        if r["config"] == name and key in r:
            per_seed[r["seed"]] += float(r[key])
    return _mean_std(list(per_seed.values()))[:2]


def _pairs(records: list[dict], a: str, b: str) -> dict[tuple[int, int], float]:
    """(seed, iteration) -> metric(a) - metric(b), where both were measured."""
    ma = {(r["seed"], r["iteration"]): r["metric"] for r in records if r["config"] == a}
    mb = {(r["seed"], r["iteration"]): r["metric"] for r in records if r["config"] == b}
    return {k: ma[k] - mb[k] for k in sorted(set(ma) & set(mb))}


def _paired_diff(records: list[dict], a: str, b: str) -> tuple[float, float, int]:
    """Mean over seeds and iterations of metric(a) - metric(b), on the same (seed, iteration)."""
    pairs = _pairs(records, a, b)
    return _mean_std(list(pairs.values())) if pairs else (float("nan"), float("nan"), 0)


def paired_by_iteration(records: list[dict], a: str, b: str) -> dict[int, tuple[float, float, int]]:
    """Per iteration: mean, std and count over seeds of metric(a) - metric(b) on the same seed."""
    pairs = _pairs(records, a, b)
    return {it: _mean_std([d for (_, i), d in pairs.items() if i == it]) for it in sorted({i for _, i in pairs})}


def loop_times(records: list[dict], a: str, b: str) -> dict:
    """The AL iteration an annotator waits for (acquisition training + pool scoring + selection) of a vs b.

    Only iterations that queried in both runs count (the last one only trains). Per iteration the means over
    seeds; ``total`` sums those iterations per seed, then averages over seeds. ``ratio`` = a / b.
    """
    keys = ("train_s", "scoring_s", "iteration_s")
    by = _by([r for r in records if r["config"] in (a, b)], "config", "iteration")
    queried = sorted(it for (cfg, it), rs in by.items() if cfg == a and (b, it) in by
                     and all("scoring_s" in r for r in rs + by[(b, it)]))
    rows = []
    for it in queried:
        row: dict = {"iteration": it}
        for who, name in (("a", a), ("b", b)):
            row[who] = {k: _mean_std([r[k] for r in by[(name, it)]])[0] for k in keys}
        row["ratio"] = row["a"]["iteration_s"] / row["b"]["iteration_s"] if row["b"]["iteration_s"] else None
        rows.append(row)
    total = {who: _mean_std(list(_seed_sums(records, name, set(queried)).values()))[:2]
             for who, name in (("a", a), ("b", b))}
    ratio = total["a"][0] / total["b"][0] if total["b"][0] else None
    return {"a": a, "b": b, "rows": rows, "total": total, "total_ratio": ratio, "queried_iterations": queried}


def _seed_sums(records: list[dict], name: str, iterations: set[int]) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for r in records:
        if r["config"] == name and r["iteration"] in iterations:
            out[r["seed"]] += float(r["iteration_s"])
    return out


def comparisons(records: list[dict], configs: list[dict]) -> dict:
    """UPS vs its full-pool twin; PLASM vs the mismatched (gold-only) and same-model baselines."""
    present = set(config_order(records, configs))
    out: dict = {"ups": [], "plasm": []}
    for c in configs:
        if c["name"] not in present:
            continue
        if c["ups"] and not c["plasm"]:
            twins = [o for o in configs if o["name"] in present and not o["ups"] and not o["plasm"]
                     and o["acquisition"] == c["acquisition"] and o["strategy"] == c["strategy"]
                     and o["successor"] == c["successor"]]
            if twins:
                t = twins[0]["name"]
                s_ups, s_full = _totals(records, c["name"], "scoring_s"), _totals(records, t, "scoring_s")
                n_ups, n_full = _totals(records, c["name"], "n_scored"), _totals(records, t, "n_scored")
                i_ups, i_full = _totals(records, c["name"], "iteration_s"), _totals(records, t, "iteration_s")
                last = max(r["iteration"] for r in records if r["config"] == c["name"])
                diff = _paired_diff(records, c["name"], t)
                sub = [r for r in records if r["config"] == c["name"] and r.get("full_pool") is False]
                keys = {(r["seed"], r["iteration"]) for r in sub}
                twin = [r for r in records if r["config"] == t and (r["seed"], r["iteration"]) in keys]
                nseed = max(1, len({r["seed"] for r in sub}))
                on_ups = [sum(r["scoring_s"] for r in sub) / nseed, sum(r["scoring_s"] for r in twin) / nseed,
                          sum(r["n_scored"] for r in sub) / nseed, sum(r["n_scored"] for r in twin) / nseed]
                fin = [_mean_std([r["metric"] for r in records if r["config"] == n and r["iteration"] == last])[0]
                       for n in (c["name"], t)]
                out["ups"].append({
                    "ups": c["name"], "full": t, "scoring_s": [s_ups[0], s_full[0]],
                    "scoring_saved": 1 - s_ups[0] / s_full[0] if s_full[0] > 0 else None,
                    "n_scored": [n_ups[0], n_full[0]], "iteration_s": [i_ups[0], i_full[0]],
                    "iteration_saved": 1 - i_ups[0] / i_full[0] if i_full[0] > 0 else None,
                    "ups_iterations": {"scoring_s": on_ups[:2], "n_scored": on_ups[2:],
                                       "saved": 1 - on_ups[0] / on_ups[1] if on_ups[1] > 0 else None},
                    "metric_diff_mean": diff[0], "metric_diff_std": diff[1], "final_metric": fin})
        if c["plasm"]:
            out["plasm"].append(_plasm_row(records, configs, present, c))
    return out


PLASM_ROLES = ("mismatch", "same", "random")  # the paper's baselines of a PLASM run, see _plasm_row


def _plasm_row(records: list[dict], configs: list[dict], present: set[str], c: dict) -> dict:
    """A PLASM run against its baselines, paired by seed and iteration (overall and per iteration):
    ``mismatch`` (its acquisition model's labels, the successor on gold only), ``same`` (the successor acquiring
    for itself on the full pool) and ``random`` (random sampling, the successor on gold only); plus the AL
    iteration time of its acquisition loop against ``same``'s."""
    preds = {
        "mismatch": lambda o: (o["successor"] == c["successor"] and o["acquisition"] == c["acquisition"]
                               and o["ups"] == c["ups"] and o["strategy"] == c["strategy"]),
        "same": lambda o: (o["acquisition"] == c["successor"] and o["successor"] == "acquisition"
                           and o["strategy"] != "random"),
        "random": lambda o: o["strategy"] == "random" and o["successor"] == c["successor"],
    }
    row: dict = {"plasm": c["name"], "successor": c["successor"]}
    for role in PLASM_ROLES:
        match = [o["name"] for o in configs if o["name"] in present and not o["plasm"] and preds[role](o)]
        if match:
            d = _paired_diff(records, c["name"], match[0])
            row[role] = {"config": match[0], "diff_mean": d[0], "diff_std": d[1], "pairs": d[2],
                         "by_iteration": paired_by_iteration(records, c["name"], match[0])}
    if "same" in row:
        row["time"] = loop_times(records, c["name"], row["same"]["config"])
    return row


# ============================================================================================== markdown
def _fmt(m: float, s: float | None = None, digits: int = 3) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None and not math.isnan(s) else "")


def markdown(result: dict, plots: dict[str, str]) -> str:
    meta, records, configs = result["meta"], result["records"], result["configs"]
    names = config_order(records, configs)
    cv = curves(records, names)
    metric = "accuracy" if meta["dataset"]["kind"] == "classification" else "strict span F1"
    unit = "instances" if meta["dataset"]["kind"] == "classification" else "sentences (words)"
    d = meta["dataset"]
    words = (f" ({d['pool_words']} words) / {d['test']} ({d['test_words']} words)" if d["kind"] == "tagging"
             else f" / {d['test']}")
    lines = [f"# AL emulation: {d['name']}", "",
             f"- command: `{meta.get('command', '')}`",
             f"- dataset: {d['name']} ({d['kind']}, labels {', '.join(d['labels'])}); pool / test: {d['pool']}{words}",
             f"- profile: {meta['settings'].get('profile', '–')}, seeds: {meta['settings']['seeds']}, "
             f"iterations: {meta['settings']['iterations']}, "
             f"seed/query budget: {meta['budgets']}",
             f"- wall time: {meta.get('wall_s', float('nan')):.0f} s on {meta.get('machine', '?')}"]
    if meta.get("student"):
        stu = meta["student"]
        lines.append(f"- student (model name `student`): layers {stu.get('layers_kept')} of the "
                     f"{stu.get('teacher_layers')} of {stu['teacher']}, distilled on {stu.get('n_texts')} pool texts "
                     f"in {stu.get('train_seconds') or 0:.0f} s on {stu.get('device')} by `{stu['command']}`")
    lines.append("")
    lines += ["## Configurations", "", "| name | what |", "|---|---|"]
    lines += [f"| {c['name']} | {c['description']} |" for c in configs if c["name"] in names]
    lines += ["", f"## Learning curves (test {metric}, mean ± std over seeds)", ""]
    its = sorted({r["iteration"] for r in records})
    header = "| iteration | labeled " + unit + " | " + " | ".join(names) + " |"
    lines += [header, "|" + "---|" * (len(names) + 2)]
    for it in its:
        ref = next((row for n in names for row in cv[n] if row["iteration"] == it), None)
        size = f"{ref['n_labeled']:.0f}" + (f" ({ref['n_labeled_words']:.0f})"
                                            if meta["dataset"]["kind"] == "tagging" else "") if ref else "–"
        cells = []
        for n in names:
            row = next((r for r in cv[n] if r["iteration"] == it), None)
            cells.append(_fmt(row["metric"], row["std"]) if row else "–")
        lines.append(f"| {it} | {size} | " + " | ".join(cells) + " |")
    if "learning_curves" in plots:
        lines += ["", f"![learning curves]({plots['learning_curves']})"]
    lines += ["", "## Time per iteration (seconds, mean over seeds)", "",
              "One row per AL run (configurations that acquire identically share it). AL iteration = acquisition "
              "training + pool scoring + UPS bookkeeping; `measure` is the extra full-pool scoring of UPS runs for "
              "the Table 1 statistic, not counted.", "",
              "| AL run | iteration | train | scoring | items scored / pool | AL iteration | measure |",
              "|---|---|---|---|---|---|---|"]
    for g, n in acquisition_groups(records, names).items():
        for row in cv[n]:
            scored = (f"{row.get('n_scored', float('nan')):.0f} / {row.get('pool_size', float('nan')):.0f}"
                      if "n_scored" in row else "–")
            lines.append(f"| {g} | {row['iteration']} | {_fmt(row.get('train_s'), None, 1)} | "
                         f"{_fmt(row.get('scoring_s'), None, 2)} | {scored} | "
                         f"{_fmt(row.get('iteration_s'), None, 1)} | "
                         f"{_fmt(row.get('measure_s'), None, 2)} |")
    succ = [n for n in names if any(r.get("successor_train_s", 0) > 0 for r in records if r["config"] == n)]
    if succ:
        lines += ["", "Successor training (for PLASM: the whole pipeline) / test evaluation seconds, by iteration:", "",
                  "| configuration | " + " | ".join(str(it) for it in its) + " |", "|---|" + "---|" * len(its)]
        for n in succ:
            cells = []
            for it in its:
                row = next((r for r in cv[n] if r["iteration"] == it), None)
                cells.append(f"{row['successor_train_s']:.0f} / {row['eval_s']:.1f}" if row else "–")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if "time_per_iteration" in plots:
        lines += ["", f"![time per iteration]({plots['time_per_iteration']})"]
    comp = comparisons(records, configs)
    if comp["ups"]:
        lines += ["", "## UPS vs full-pool scoring", "",
                  "| UPS run | full-pool twin | on UPS iterations: scoring s (UPS / full) | saved | items scored | "
                  "all iterations: scoring s | saved | items scored (UPS / full) | "
                  "AL iteration s (UPS / full) | saved | Δ metric (UPS − full), mean ± std | "
                  "final metric (UPS / full) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for u in comp["ups"]:
            ui = u["ups_iterations"]
            lines.append(
                f"| {u['ups']} | {u['full']} | {ui['scoring_s'][0]:.1f} / {ui['scoring_s'][1]:.1f} | "
                f"{_pct(ui['saved'])} | {ui['n_scored'][0]:.0f} / {ui['n_scored'][1]:.0f} | "
                f"{u['scoring_s'][0]:.1f} / {u['scoring_s'][1]:.1f} | "
                f"{_pct(u['scoring_saved'])} | {u['n_scored'][0]:.0f} / {u['n_scored'][1]:.0f} | "
                f"{u['iteration_s'][0]:.1f} / {u['iteration_s'][1]:.1f} | {_pct(u['iteration_saved'])} | "
                f"{_fmt(u['metric_diff_mean'], u['metric_diff_std'])} | "
                f"{_fmt(u['final_metric'][0])} / {_fmt(u['final_metric'][1])} |")
        if "ups_curves" in plots:
            lines += ["", f"![UPS vs full pool]({plots['ups_curves']})"]
        lines += ["", "Seconds and items are summed over the iterations of a seed (UPS iterations only, or every "
                  "scored iteration including the full-pool warm-up), then averaged over seeds. Δ metric pairs the "
                  "two runs by seed and iteration."]
        recall_rows = [(n, row) for n in names for row in cv[n] if "ups_recall" in row]
        if recall_rows:
            lines += ["", "UPS recall (share of the standard query among the items UPS rescored) and query "
                      "agreement (share of the UPS query the standard query would also take), non-full iterations:",
                      "", "| configuration | iteration | UPS recall | query agreement |", "|---|---|---|---|"]
            lines += [f"| {n} | {row['iteration']} | {_fmt(row['ups_recall'], row.get('ups_recall_std'))} | "
                      f"{_fmt(row['query_vs_standard'], row.get('query_vs_standard_std'))} |" for n, row in recall_rows]
    if comp["plasm"]:
        lines += plasm_markdown(comp["plasm"], records, cv, plots)
    ov_names = overlap_names(records, names)
    if ov_names:
        lines += ["", "## Table 1 analogue", "",
                  "Share of an iteration's standard query (top of a fresh full-pool scoring) that lies in the top-k% "
                  "most uncertain items of the current pool by the previous iteration's scores "
                  "(mean ± std over seeds)."]
        for g, n in ov_names.items():
            table = overlap_table(records, n)
            cols = sorted(table)
            lines += ["", f"**{g}**", "", "| top-k% / iteration | " + " | ".join(str(c) for c in cols) + " |",
                      "|---|" + "---|" * len(cols)]
            for k in TOP_K_PERCENTS:
                lines.append(f"| {k}% | " + " | ".join(_fmt(*table[c][str(k)]) for c in cols) + " |")
        if "overlap" in plots:
            lines += ["", f"![Table 1 analogue]({plots['overlap']})"]
    lines += stopping_markdown(records, names, meta["settings"])
    return "\n".join(lines) + "\n"


ROLE_TEXT = {"mismatch": "(a) its labels, successor on gold only", "same": "(c) successor acquires itself",
             "random": "(d) random sampling → successor"}


def plasm_markdown(rows: list[dict], records: list[dict], cv: dict[str, list[dict]], plots: dict[str, str]) -> list[str]:
    """PLASM against its baselines: overall and per-iteration paired differences, and the AL iteration times."""
    lines = ["", "## PLASM vs baselines (paired by seed and iteration)", "",
             "| PLASM run | successor | " + " | ".join(f"vs {ROLE_TEXT[r]}: Δ mean ± std" for r in PLASM_ROLES) + " |",
             "|---|---|" + "---|" * len(PLASM_ROLES)]
    for p in rows:
        cells = [f"{_fmt(p[r]['diff_mean'], p[r]['diff_std'])} (vs {p[r]['config']})" if r in p else "–"
                 for r in PLASM_ROLES]
        lines.append(f"| {p['plasm']} | {p['successor']} | " + " | ".join(cells) + " |")
    if "plasm_curves" in plots:
        lines += ["", f"![PLASM vs baselines]({plots['plasm_curves']})"]
    for p in rows:
        lines += _plasm_iterations(p, cv) + _plasm_times(p)
    lines += _plasm_internals(records)
    return lines


def _plasm_iterations(p: dict, cv: dict[str, list[dict]]) -> list[str]:
    roles = [r for r in PLASM_ROLES if r in p]
    names = [p["plasm"]] + [p[r]["config"] for r in roles]
    lines = ["", f"**{p['plasm']}** per iteration: test metric (mean ± std over seeds) and the paired difference "
             f"PLASM − baseline on the same seed (mean ± std)", "",
             "| iteration | labeled | " + " | ".join(names) + " | " +
             " | ".join(f"{p['plasm']} − {p[r]['config']}" for r in roles) + " |",
             "|---|---|" + "---|" * (len(names) + len(roles))]
    for row in cv[p["plasm"]]:
        it = row["iteration"]
        cells = []
        for n in names:
            m = next((x for x in cv.get(n, []) if x["iteration"] == it), None)
            cells.append(_fmt(m["metric"], m["std"]) if m else "–")
        for r in roles:
            d = p[r]["by_iteration"].get(it)
            cells.append(_fmt(d[0], d[1]) if d else "–")
        lines.append(f"| {it} | {row['n_labeled']:.0f} | " + " | ".join(cells) + " |")
    return lines


def _plasm_times(p: dict) -> list[str]:
    t = p.get("time")
    if not t:
        return []
    lines = ["", f"AL iteration an annotator waits for (seconds, mean over seeds): **{t['a']}**'s acquisition loop "
             f"vs **{t['b']}** (the successor acquiring for itself). PLASM itself runs once, after annotation "
             "(its seconds are in the internals table).", "",
             f"| iteration | {t['a']}: train / scoring / iteration | {t['b']}: train / scoring / iteration | "
             "ratio |", "|---|---|---|---|"]
    for row in t["rows"]:
        a, b = row["a"], row["b"]
        cells = [" / ".join(_fmt(x[k], None, 1) for k in ("train_s", "scoring_s", "iteration_s")) for x in (a, b)]
        lines.append(f"| {row['iteration']} | {cells[0]} | {cells[1]} | {_ratio(row['ratio'])} |")
    ta, tb = t["total"]["a"], t["total"]["b"]
    lines.append(f"| total of iterations {', '.join(map(str, t['queried_iterations']))} (per seed) | "
                 f"{_fmt(ta[0], ta[1], 1)} | {_fmt(tb[0], tb[1], 1)} | {_ratio(t['total_ratio'])} |")
    return lines


def _plasm_internals(records: list[dict]) -> list[str]:
    plasm = [r for r in records if r.get("plasm")]
    if not plasm:
        return []
    lines = ["", "PLASM internals (mean over seeds): teacher dev score q, pseudo-labels kept / made, seconds.", "",
             "| configuration | iteration | q | kept / pseudo | PLASM seconds |", "|---|---|---|---|---|"]
    for (cfg, it), rs in sorted(_by(plasm, "config", "iteration").items()):
        q = _mean_std([r["plasm"].get("q") for r in rs])[0]
        kept = _mean_std([r["plasm"].get("kept") for r in rs])[0]
        made = _mean_std([r["plasm"].get("pseudo") for r in rs])[0]
        secs = _mean_std([r["successor_train_s"] for r in rs])[0]
        lines.append(f"| {cfg} | {it} | {_fmt(q)} | {kept:.0f} / {made:.0f} | {secs:.0f} |")
    return lines


def _ratio(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.0f}%"
