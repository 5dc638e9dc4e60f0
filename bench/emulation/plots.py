"""PNG plots of an emulation report: learning curves (mean ± std bands), focused UPS / PLASM curves, time per
iteration, and the Table 1 analogue. Small palette PNGs, so docs can commit them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.emulation.metrics import TOP_K_PERCENTS
from bench.emulation.report import (PLASM_ROLES, acquisition_groups, comparisons, config_order, curves,
                                    overlap_names, overlap_table)


def _save(fig, path: Path) -> None:
    """Save, then re-encode as a 256-colour palette PNG (~3x smaller, small enough to commit with docs)."""
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    try:
        from PIL import Image

        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    except Exception:  # noqa: BLE001 - the plain PNG is fine too
        pass


def plot(result: dict, out_dir: Path, prefix: str = "") -> dict[str, str]:
    """learning_curves.png, time_per_iteration.png and (when measured) overlap.png; returns name -> file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records, configs, meta = result["records"], result["configs"], result["meta"]
    names = config_order(records, configs)
    cv = curves(records, names)
    tagging = meta["dataset"]["kind"] == "tagging"
    files: dict[str, str] = {}
    title = meta["dataset"]["name"]

    def curve_plot(subset: list[str], fname: str, what: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
        for n in subset:
            x = np.array([r["n_labeled_words" if tagging else "n_labeled"] for r in cv[n]])
            m = np.array([r["metric"] for r in cv[n]])
            s = np.array([r["std"] for r in cv[n]])
            line, = ax.plot(x, m, marker="o", ms=3, label=n)
            ax.fill_between(x, m - s, m + s, alpha=0.15, color=line.get_color())
        ax.set_xlabel("labeled words" if tagging else "labeled instances")
        ax.set_ylabel("test strict span F1" if tagging else "test accuracy")
        n_seeds = len({r["seed"] for r in records})
        ax.set_title(f"{title}: {what} (mean ± std, {n_seeds} seed{'s' * (n_seeds != 1)})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, out_dir / fname)

    files["learning_curves"] = f"{prefix}learning_curves.png"
    curve_plot(names, files["learning_curves"], "successor quality")
    comp = comparisons(records, configs)
    if comp["ups"]:
        u = comp["ups"][0]
        randoms = {c["name"] for c in configs if c["strategy"] == "random" and c["successor"] == "acquisition"}
        subset = [n for n in names if n in (u["ups"], u["full"]) or n in randoms]
        files["ups_curves"] = f"{prefix}ups_vs_full.png"
        curve_plot(subset, files["ups_curves"], "UPS vs full-pool scoring")
    if comp["plasm"]:
        p = comp["plasm"][0]
        subset = [n for n in names if n == p["plasm"] or any(p.get(role, {}).get("config") == n
                                                              for role in PLASM_ROLES)]
        files["plasm_curves"] = f"{prefix}plasm_vs_baselines.png"
        curve_plot(subset, files["plasm_curves"], f"{p['successor']} successor")

    # one line per distinct acquisition run (configs sharing it have identical timings)
    groups = acquisition_groups(records, names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90)
    for g, n in groups.items():
        rows = [r for r in cv[n] if "scoring_s" in r]
        axes[0].plot([r["iteration"] for r in rows], [r["scoring_s"] for r in rows], marker="o", ms=3, label=g)
        axes[1].plot([r["iteration"] for r in cv[n]], [r["train_s"] for r in cv[n]], marker="o", ms=3, label=g)
    axes[0].set_title("pool scoring (s)")
    axes[1].set_title("acquisition training (s)")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("AL iteration")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: time per AL iteration (mean over seeds)", fontsize=10)
    fig.tight_layout()
    files["time_per_iteration"] = f"{prefix}time_per_iteration.png"
    _save(fig, out_dir / files["time_per_iteration"])

    ov = [(n, overlap_table(records, n)) for n in overlap_names(records, names).values()]
    if ov:
        fig, ax = plt.subplots(figsize=(6, 3.8), dpi=90)
        for n, table in ov[:2]:
            cols = sorted(table)
            for j, k in enumerate(TOP_K_PERCENTS):
                ax.plot(cols, [table[c][str(k)][0] for c in cols], marker="o" if n == ov[0][0] else "s", ms=3,
                        color=f"C{j}", linestyle="-" if n == ov[0][0] else "--", label=f"{n} top-{k}%")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("current AL iteration")
        ax.set_ylabel("share of standard query")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"{title}: Table 1 analogue")
        fig.tight_layout()
        files["overlap"] = f"{prefix}overlap.png"
        _save(fig, out_dir / files["overlap"])
    return files
