"""The results folder of a run: results.json, per_episode.csv, table.md and PNG plots.

Everything is computed from ``episodes.jsonl`` + ``run_config.json`` (see
:mod:`refcut.evaluation.runner`), with episodes in list order, so a merged sharded run and an
unsharded run give identical numbers (wall-time figures aside).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections import defaultdict
from pathlib import Path

from refcut.evaluation.baselines import is_model_method, method_label
from refcut.evaluation.metrics import NOC_THRESHOLDS, NOF_THRESHOLDS, noc_per_target, summarize, threshold_label
from refcut.evaluation.runner import EPISODES_FILE, RUN_CONFIG_FILE, read_records
from refcut.provenance import git_revision, package_version

KIND_ORDER = ("single", "pair", "whole", "object")


def config_label(config: dict) -> str:
    """``grabcut`` / ``model [both]`` / ``model [both, step 16]``."""
    name = method_label(config["method"])
    if not is_model_method(config["method"]):
        return name
    extras = [config["mode"]]
    if config["study"] == "polygon_step":
        extras.append(f"polygon step {config['polygon_step']}")
    elif config["study"] == "reference_scale":
        extras.append(f"scale {config['reference_scale']:g}")
    return f"{name} [{', '.join(extras)}]"


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def compute_results(run_dir: str | Path) -> dict:
    """All numbers of a run folder (see module doc)."""
    run_dir = Path(run_dir)
    config_path = run_dir / RUN_CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: not a refcut eval run folder")
    settings = json.loads(config_path.read_text())
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in read_records(run_dir / EPISODES_FILE):
        grouped[(record["dataset"], record["config"])].append(record)
    entries = []
    for dataset in settings["datasets"]:
        for config in settings["configs"]:
            records = sorted(grouped.get((dataset["name"], config["key"]), []), key=lambda r: r["episode_index"])
            if not records:
                continue
            max_clicks = config["max_clicks"]
            all_ious = [r["ious"] for r in records]
            by_kind = {}
            kinds = sorted({r["kind"] for r in records},
                           key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k))
            for kind in kinds:
                subset = [r for r in records if r["kind"] == kind]
                by_kind[kind] = summarize([r["ious"] for r in subset], max_clicks,
                                          total_seconds=sum(r["seconds"] for r in subset))
            entries.append({
                "dataset": dataset["name"],
                "config": config,
                "label": config_label(config),
                "all": summarize(all_ious, max_clicks, total_seconds=sum(r["seconds"] for r in records)),
                "by_kind": by_kind,
                "complete": len(records) == dataset["episodes_selected"],
            })
    return {
        "refcut_version": package_version(),
        "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "configuration": settings,
        "results": entries,
    }


def _write_per_episode_csv(run_dir: Path, settings: dict) -> None:
    records = read_records(run_dir / EPISODES_FILE)
    config_order = {c["key"]: i for i, c in enumerate(settings["configs"])}
    dataset_order = {d["name"]: i for i, d in enumerate(settings["datasets"])}
    records.sort(key=lambda r: (dataset_order.get(r["dataset"], 0), config_order.get(r["config"], 0),
                                r["episode_index"]))
    max_len = max((len(r["ious"]) for r in records), default=0)
    header = ["dataset", "episode_index", "episode_id", "kind", "method", "mode", "study", "polygon_step",
              "reference_scale"]
    header += [f"NoC@{threshold_label(t)}" for t in NOC_THRESHOLDS]
    header += [f"iou_{k}" for k in range(1, max_len + 1)]
    with (run_dir / "per_episode.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in records:
            nocs = [int(noc_per_target([r["ious"]], t, r["max_clicks"])[0]) for t in NOC_THRESHOLDS]
            writer.writerow([r["dataset"], r["episode_index"], r["episode_id"], r["kind"], r["method"], r["mode"],
                             r["study"], r["polygon_step"], r["reference_scale"], *nocs,
                             *[f"{v:.4f}" for v in r["ious"]]])


def _main_entries(results: dict) -> list[dict]:
    return [e for e in results["results"] if e["config"]["study"] == "main"]


def render_table(results: dict) -> str:
    """table.md: Table 1 (method × dataset × NoC), details, Table 3 (modes), per kind, ablations."""
    settings = results["configuration"]
    datasets = [d["name"] for d in settings["datasets"]]
    main = _main_entries(results)
    lines = ["# RefCut evaluation", ""]
    lines.append(f"refcut {results['refcut_version']}, git {results['git_revision'] or 'n/a'}, "
                 f"split `{settings['split']}`, threshold {settings['threshold']}, "
                 f"limit {settings['limit']}, shard {settings['shard']}.")
    lines.append("")
    lines.append("| dataset | episodes (all) | skipped (no reference) | evaluated | episode-list hash |")
    lines.append("|---|---|---|---|---|")
    for d in settings["datasets"]:
        lines.append(f"| {d['name']} | {d['episodes_total']} | {d['episodes_skipped']} | {d['episodes_selected']} | "
                     f"`{(d['episode_list_hash'] or '-')[:16]}` |")
    lines.append("")

    labels = list(dict.fromkeys(e["label"] for e in main))
    by_key = {(e["label"], e["dataset"]): e for e in main}
    lines.append("## Table 1: NoC per method and dataset")
    lines.append("")
    header = "| Method |" + "".join(f" {d} NoC@{threshold_label(t)} |" for d in datasets for t in NOC_THRESHOLDS)
    lines.append(header)
    lines.append("|---|" + "---|" * (len(datasets) * len(NOC_THRESHOLDS)))
    for label in labels:
        cells = []
        for d in datasets:
            entry = by_key.get((label, d))
            for t in NOC_THRESHOLDS:
                cells.append(_fmt(entry["all"][f"NoC@{threshold_label(t)}"]) if entry else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")

    lines.append("## Details")
    lines.append("")
    lines.append("| Dataset | Method | Episodes | NoC@80 | NoC@85 | NoC@90 | NoF@85 | NoF@90 | IoU&1 | SPC (s) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for e in main:
        s = e["all"]
        incomplete = "" if e["complete"] else " (partial)"
        lines.append(f"| {e['dataset']} | {e['label']} | {s['count']}{incomplete} | {_fmt(s['NoC@80'])} | "
                     f"{_fmt(s['NoC@85'])} | {_fmt(s['NoC@90'])} | "
                     + " | ".join(str(s[f"NoF@{threshold_label(t)}"]) for t in NOF_THRESHOLDS)
                     + f" | {_fmt(s['IoU&1'], 3)} | {_fmt(s.get('seconds_per_click'), 3)} |")
    lines.append("")

    lines.append("## Table 3: reference modes")
    lines.append("")
    model_entries = [e for e in main if is_model_method(e["config"]["method"])]
    if not model_entries:
        lines.append("No model method in this run (reference modes apply to model methods only).")
    else:
        lines.append("| Method | Mode |" + "".join(f" {d} NoC@80 | {d} NoC@85 | {d} NoC@90 | {d} IoU&1 |"
                                                    for d in datasets))
        lines.append("|---|---|" + "---|" * (4 * len(datasets)))
        rows = list(dict.fromkeys((e["config"]["method"], e["config"]["mode"]) for e in model_entries))
        lookup = {(e["config"]["method"], e["config"]["mode"], e["dataset"]): e for e in model_entries}
        for method, mode in rows:
            cells = []
            for d in datasets:
                entry = lookup.get((method, mode, d))
                if entry is None:
                    cells += ["-"] * 4
                    continue
                s = entry["all"]
                cells += [_fmt(s["NoC@80"]), _fmt(s["NoC@85"]), _fmt(s["NoC@90"]), _fmt(s["IoU&1"], 3)]
            lines.append(f"| {method_label(method)} | {mode} | " + " | ".join(cells) + " |")
    lines.append("")

    lines.append("## NoC per combination kind")
    lines.append("")
    lines.append("| Dataset | Method | Kind | Episodes | NoC@85 | NoC@90 | IoU&1 |")
    lines.append("|---|---|---|---|---|---|---|")
    for e in main:
        for kind, s in e["by_kind"].items():
            lines.append(f"| {e['dataset']} | {e['label']} | {kind} | {s['count']} | {_fmt(s['NoC@85'])} | "
                         f"{_fmt(s['NoC@90'])} | {_fmt(s['IoU&1'], 3)} |")
    lines.append("")

    for study, title, field in (("polygon_step", "reference mask quality (polygon step)", "polygon_step"),
                                ("reference_scale", "reference scale", "reference_scale")):
        entries = [e for e in results["results"] if e["config"]["study"] == study]
        if not entries:
            continue
        lines.append(f"## Ablation: {title}, IoU after 1 click")
        lines.append("")
        lines.append(f"| Method | Mode | {field} |" + "".join(f" {d} IoU&1 |" for d in datasets))
        lines.append("|---|---|---|" + "---|" * len(datasets))
        rows = list(dict.fromkeys((e["config"]["method"], e["config"]["mode"], e["config"][field]) for e in entries))
        lookup = {(e["config"]["method"], e["config"]["mode"], e["config"][field], e["dataset"]): e for e in entries}
        for method, mode, level in rows:
            cells = [_fmt(lookup[(method, mode, level, d)]["all"]["IoU&1"], 3)
                     if (method, mode, level, d) in lookup else "-" for d in datasets]
            lines.append(f"| {method_label(method)} | {mode} | {level:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_plots(results: dict, run_dir: Path) -> list[Path]:
    """PNG plots: mIoU vs clicks, NoC per combination kind, ablation curves. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    written: list[Path] = []
    datasets = [d["name"] for d in results["configuration"]["datasets"]]
    main = _main_entries(results)
    if main:
        fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
        for ax, dataset in zip(axes[0], datasets):
            for e in (e for e in main if e["dataset"] == dataset):
                curve = e["all"]["mIoU@k"]
                ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=e["label"])
            ax.set_title(dataset)
            ax.set_xlabel("number of clicks")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_ylabel("mean IoU")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = run_dir / "miou_vs_clicks.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7.5), squeeze=False)
        for column, dataset in enumerate(datasets):
            entries = [e for e in main if e["dataset"] == dataset]
            kinds = list(dict.fromkeys(k for e in entries for k in e["by_kind"]))
            for row, metric in enumerate(("NoC@85", "NoC@90")):
                ax = axes[row][column]
                width = 0.8 / max(1, len(entries))
                for i, e in enumerate(entries):
                    values = [e["by_kind"].get(k, {}).get(metric, 0.0) for k in kinds]
                    positions = [j + (i - (len(entries) - 1) / 2) * width for j in range(len(kinds))]
                    ax.bar(positions, values, width=width, label=e["label"])
                ax.set_xticks(range(len(kinds)))
                ax.set_xticklabels([f"{k}\n(n={entries[0]['by_kind'].get(k, {}).get('count', 0)})" for k in kinds])
                ax.set_ylabel(metric)
                ax.set_ylim(0, max(e["config"]["max_clicks"] for e in entries) * 1.4)
                ax.set_title(f"{dataset}: {metric} per combination kind")
                ax.grid(axis="y", alpha=0.3)
                ax.legend(fontsize=8, loc="upper center", ncol=3)
        fig.tight_layout()
        path = run_dir / "noc_per_kind.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for study, field, xlabel in (("polygon_step", "polygon_step", "polygon step (boundary points, 0 = exact mask)"),
                                 ("reference_scale", "reference_scale", "reference scale factor")):
        entries = [e for e in results["results"] if e["config"]["study"] == study]
        if not entries:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.2))
        series = defaultdict(list)
        for e in entries:
            series[(method_label(e["config"]["method"]), e["config"]["mode"], e["dataset"])].append(
                (e["config"][field], e["all"]["IoU&1"]))
        for (method, mode, dataset), points in series.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{method} [{mode}] {dataset}")
        levels = sorted({e["config"][field] for e in entries})
        ax.set_xticks(levels)
        if study == "reference_scale":
            ax.invert_xaxis()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean IoU after 1 click")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Ablation: {field.replace('_', ' ')}")
        fig.tight_layout()
        path = run_dir / f"ablation_{study}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(run_dir: str | Path) -> dict:
    """Write results.json, per_episode.csv, table.md and the plots into ``run_dir``; returns the results."""
    run_dir = Path(run_dir)
    results = compute_results(run_dir)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    _write_per_episode_csv(run_dir, results["configuration"])
    (run_dir / "table.md").write_text(render_table(results) + "\n")
    write_plots(results, run_dir)
    return results
