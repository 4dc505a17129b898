"""PNG plots of evaluation results (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = ("es", "gs", "generation", "ls_ordinary", "ls_neighborhood")
LABELS = {
    "es": "ES (edit)",
    "gs": "GS (paraphrase)",
    "generation": "generation check",
    "ls_ordinary": "LS ordinary",
    "ls_neighborhood": "LS neighbourhood",
    "es_first_batch": "ES of first batch",
}


def _grid(n: int) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_with_legend_below(
    fig: Any,
    ax: Any,
    path: Path,
    ncol: int,
    title: str | None = None,
    bottom: float = 0.08,
    order: Sequence[str] | None = None,
) -> Path:
    """Save a figure of several panels with one legend below them all: `ax`'s entries,
    then those only other panels have (in `order` when given)."""
    seen: dict[str, Any] = {}
    for a in (ax, *fig.axes):
        for h, label in zip(*a.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, h)
    labels = [x for x in order if x in seen] if order is not None else list(seen)
    handles = [seen[x] for x in labels]
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_vs_n(
    simultaneous: dict[str, dict[str, Any]],
    path: Path,
    title: str = "",
    targets: Mapping[int, Mapping[str, float]] | None = None,
) -> Path:
    """Each metric against the number of simultaneous edits (log2 axis), one line per editor;
    `targets` ({N: {metric: least value}}) are drawn as black bars."""
    fig, axes = _grid(len(METRICS))
    for ax, metric in zip(axes, METRICS, strict=True):
        for editor, by_n in simultaneous.items():
            pts = sorted((int(n), m[metric]) for n, m in by_n.items() if m.get(metric) is not None)
            if pts:
                line = ax.plot(*zip(*pts, strict=True), marker="o", label=editor)[0]
                _interval_bars(ax, by_n, metric, line.get_color())
        goals = sorted((n, t[metric]) for n, t in (targets or {}).items() if metric in t)
        if goals:
            ax.scatter(*zip(*goals, strict=True), marker="_", s=300, c="black", label="target")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("edits N")
        ax.set_title(LABELS[metric])
    lines = len(simultaneous) + bool(targets)
    rows = -(-lines // 4)  # legend rows below the panels, four entries each
    fig.set_size_inches(fig.get_figwidth(), 3.0 + 0.25 * rows)
    return save_with_legend_below(
        fig, axes[0], path, ncol=min(lines, 4), title=title or None, bottom=0.07 * rows + 0.02
    )


def _interval_bars(ax: Any, by_n: dict[str, Any], metric: str, color: str) -> None:
    """The 95 % interval of each mean over draws (`summarise_draws`), as error bars."""
    for n, m in by_n.items():
        ci = m.get("spread", {}).get(metric, {}).get("ci95")
        if ci and m.get(metric) is not None:
            below, above = m[metric] - ci[0], ci[1] - m[metric]
            ax.errorbar(
                int(n),
                m[metric],
                yerr=[[max(below, 0.0)], [max(above, 0.0)]],
                color=color,
                capsize=3,
                linewidth=1,
            )


def plot_sequential(sequential: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Metrics against edits so far, one line per (editor, mode)."""
    metrics = tuple(
        m
        for m in (*METRICS, "es_first_batch")
        if any(h.get(m) is not None for hist in sequential.values() for h in hist)
    ) or ("es_first_batch",)  # only the metrics that were scored (--sequential-full-every)
    fig, axes = _grid(len(metrics))
    if len(sequential) > 3:  # room for the legend beside the axes
        fig.set_size_inches(3.2 * len(metrics) + 3.6, 3.4)
    for ax, metric in zip(axes, metrics, strict=True):
        for run, history in sequential.items():
            pts = [(h["edits"], h[metric]) for h in history if h.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=run)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("edits so far")
        ax.set_title(LABELS[metric])
    if len(sequential) > 3:
        axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    else:
        axes[0].legend(fontsize=8)
    return _save(fig, path)


_KNOBS = (
    ("eta", "o", "η scale"),
    ("lambda", "s", "λ"),
    ("preserve", "^", "μ (preservation prior)"),
)


def _knob(row: dict[str, Any]) -> str:
    if "knob" in row:
        return str(row["knob"])
    return "eta" if row.get("lambda") is None else "lambda"  # rows from before the μ axis


def _tag(row: dict[str, Any], knob: str) -> str:
    if knob == "eta":
        return f"η×{row['eta_scale']:g}"
    if knob == "lambda":
        return f"λ={row['lambda']:g}"
    return f"μ={row['preserve']:g}"


def plot_tradeoff(tradeoff: list[dict[str, Any]], path: Path) -> Path:
    """ES against LS (ordinary and neighbourhood) as the edit-time η scale, λ and the
    preservation-prior weight μ vary (one knob at a time); each point labelled by its knob."""
    fig, axes = _grid(2)
    for ax, ls in zip(axes, ("ls_ordinary", "ls_neighborhood"), strict=True):
        for knob, marker, label in _KNOBS:
            rows = [r for r in tradeoff if _knob(r) == knob]
            rows = [r for r in rows if r.get(ls) is not None and r.get("es") is not None]
            if not rows:
                continue
            ax.plot([r[ls] for r in rows], [r["es"] for r in rows], marker=marker, label=label)
            for r in rows:
                ax.annotate(_tag(r, knob), (r[ls], r["es"]), fontsize=7)
        ax.set_xlabel(LABELS[ls])
        ax.set_ylabel("ES")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_training(histories: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Meta-training curves, one line per run: validation ES, GS and LS against the step
    (the entries that carry them) and the meta-loss's generalisation term (`gen`, every step,
    as a running mean over 20 steps)."""
    panels = (("ES", "validation ES"), ("GS", "validation GS"), ("LS", "validation LS"))
    fig, axes = _grid(len(panels) + 1)
    for run, history in histories.items():
        for ax, (key, _) in zip(axes, panels, strict=False):
            pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=run)
        gen = [(h["step"], h["gen"]) for h in history if h.get("gen") is not None]
        if gen:
            steps, vals = zip(*gen, strict=True)
            k = min(20, len(vals))
            smooth = [
                sum(vals[max(0, i - k + 1) : i + 1]) / min(k, i + 1) for i in range(len(vals))
            ]
            axes[-1].plot(steps, smooth, label=run)
    for ax, (_, name) in zip(axes, panels, strict=False):
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name)
        ax.set_xlabel("meta-step")
    axes[-1].set_title("paraphrase NLL (L_gen, mean of 20)")
    axes[-1].set_xlabel("meta-step")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
