"""Run (method, reference mode) configurations over the episodes of datasets; resumable, shardable, parallel.

A run folder holds ``run_config.json`` (the settings) and ``episodes.jsonl`` (one line per
finished (dataset, configuration, episode), appended as soon as it finishes). Rerunning the
same command skips what the jsonl already holds, so an interrupted run resumes. With
``shard=(i, n)`` a run evaluates episodes ``i, i+n, i+2n, ...`` of the (deterministic)
episode list; :func:`merge_runs` joins the shards' folders into one whose report equals that
of an unsharded run (all numbers but wall-time ones).

Which episodes: every episode that has a reference (skipped ones are counted, not run),
reduced by ``limit`` to ``limit`` evenly spaced episodes (deterministic) so a quick run still
covers every image region of the list.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refcut.evaluation.baselines import MethodSpec, is_model_method, load_predictor, method_label
from refcut.evaluation.protocol import PREDICTION_THRESHOLD, REFERENCE_MODES, EpisodeData, evaluate_episode

EPISODES_FILE = "episodes.jsonl"
RUN_CONFIG_FILE = "run_config.json"
DEFAULT_DATA_MODULE = "refcut.data"

PredictorFactory = Callable[[str], Any]


@dataclass(frozen=True)
class EvalConfig:
    """One configuration: a method under a reference mode, with optional reference perturbations.

    ``study`` is ``"main"`` (full click curves), ``"polygon_step"`` or ``"reference_scale"``
    (ablations, which only need the IoU after the first click, so they run ``max_clicks=1``).
    """

    method: str
    mode: str
    study: str = "main"
    polygon_step: int = 0
    reference_scale: float = 1.0
    max_clicks: int = 20

    @property
    def key(self) -> str:
        """A unique, readable string for this configuration."""
        return f"{self.method}|{self.mode}|{self.study}|p{self.polygon_step}|s{self.reference_scale:g}|c{self.max_clicks}"


def build_configs(
    methods: Sequence[str],
    modes: Sequence[str] = REFERENCE_MODES,
    max_clicks: int = 20,
    polygon_steps: Sequence[int] = (),
    reference_scales: Sequence[float] = (),
    ablation_mode: str = "both",
) -> list[EvalConfig]:
    """The configurations of a run: baselines once (mode none), model methods per mode, plus ablations.

    ``methods`` are :class:`MethodSpec` strings; a spec's own ``@modes`` replace ``modes`` for it.
    """
    for mode in [*modes, ablation_mode]:
        if mode not in REFERENCE_MODES:
            raise ValueError(f"unknown reference mode {mode!r}; expected one of {REFERENCE_MODES}")
    if not methods:
        raise ValueError("give at least one method")
    configs: list[EvalConfig] = []
    for text in methods:
        parsed = MethodSpec.parse(text, REFERENCE_MODES)
        method = parsed.spec
        if not is_model_method(method):
            if parsed.modes not in (None, ("none",)):
                raise ValueError(f"baseline {parsed.source!r} ignores references; it runs in mode 'none' only")
            configs.append(EvalConfig(method, "none", max_clicks=max_clicks))
            continue
        configs.extend(EvalConfig(method, mode, max_clicks=max_clicks) for mode in parsed.modes or modes)
        if parsed.modes is not None and ablation_mode not in parsed.modes:
            continue  # e.g. a no-reference model restricted to @none: reference ablations do not apply
        configs.extend(
            EvalConfig(method, ablation_mode, "polygon_step", polygon_step=int(step), max_clicks=1)
            for step in polygon_steps
        )
        configs.extend(
            EvalConfig(method, ablation_mode, "reference_scale", reference_scale=float(scale), max_clicks=1)
            for scale in reference_scales
        )
    unique = list(dict.fromkeys(configs))
    specs = list(dict.fromkeys(config.method for config in unique))
    labels = [method_label(spec) for spec in specs]
    for label in set(labels):
        if labels.count(label) > 1:
            clashing = [spec for spec in specs if method_label(spec) == label]
            raise ValueError(f"methods {clashing} would all be labelled {label!r} in the tables; "
                             f"name them, e.g. --method mine={clashing[0]}")
    return unique


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based i < n) → ``(i, n)``; None stays None."""
    if text is None:
        return None
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as error:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from error
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def select_indices(total: int, limit: int | None) -> list[int]:
    """Indices of ``limit`` evenly spaced items out of ``total`` (all when limit is None or >= total)."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, limit)})


def ids_hash(ids: Iterable[str]) -> str:
    """sha256 over the newline-joined ids (the identity of an evaluated subset)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


# ---------------------------------------------------------------- data layer adapter


def _data_api(module_name: str):
    return importlib.import_module(module_name)


def dataset_name(path: str, dataset: Any) -> str:
    """A short display name: the dataset's ``name`` attribute, else the folder name."""
    name = getattr(dataset, "name", None)
    if isinstance(name, str) and name:
        return name
    return Path(path).resolve().name


def to_episode_data(loaded: Any, episode: Any) -> EpisodeData:
    """Accept :class:`EpisodeData` or any object with the same-meaning attributes from the data layer."""
    if isinstance(loaded, EpisodeData):
        return loaded

    def first(*names: str) -> Any:
        for name in names:
            if hasattr(loaded, name):
                return getattr(loaded, name)
        return None

    image = first("image", "target_image")
    gt = first("gt_mask", "target_mask")
    if image is None or gt is None:
        raise TypeError(f"load_episode returned {type(loaded).__name__} without a target image / gt mask")
    return EpisodeData(
        episode_id=episode.episode_id,
        kind=episode.kind,
        image=image,
        gt_mask=gt,
        ignore_mask=first("ignore_mask", "target_ignore_mask"),
        reference_image=first("reference_image"),
        positive_mask=first("positive_mask", "reference_positive_mask"),
        negative_mask=first("negative_mask", "reference_negative_mask"),
    )


@dataclass
class DatasetPlan:
    """The episodes of one dataset a run evaluates."""

    path: str
    name: str
    total: int
    skipped: int
    selected: list[Any]
    """(index in the selected list, Episode) of this shard."""
    selected_count: int
    episode_list_hash: str | None
    selected_hash: str


def plan_dataset(
    path: str, split: str | None, limit: int | None, shard: tuple[int, int] | None, data_module: str
) -> DatasetPlan:
    """Open a dataset, build its episodes, drop skipped ones, apply ``limit`` then ``shard``."""
    api = _data_api(data_module)
    dataset = api.open_dataset(path, split=split)
    episodes = list(api.build_episodes(dataset))
    runnable = [ep for ep in episodes if getattr(ep, "skipped_reason", None) is None]
    chosen = [runnable[i] for i in select_indices(len(runnable), limit)]
    indexed = list(enumerate(chosen))
    if shard is not None:
        indexed = indexed[shard[0] :: shard[1]]
    list_hash = api.episode_list_hash(episodes) if hasattr(api, "episode_list_hash") else None
    return DatasetPlan(
        path=str(path),
        name=dataset_name(path, dataset),
        total=len(episodes),
        skipped=len(episodes) - len(runnable),
        selected=indexed,
        selected_count=len(chosen),
        episode_list_hash=list_hash,
        selected_hash=ids_hash(ep.episode_id for ep in chosen),
    )


# ---------------------------------------------------------------- work units

_WORKER_STATE: dict[str, Any] = {}


def _init_worker(single_thread: bool) -> None:
    _WORKER_STATE.clear()
    if single_thread:
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # pragma: no cover
            pass
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass


def _cached(key: tuple, make: Callable[[], Any]) -> Any:
    if key not in _WORKER_STATE:
        _WORKER_STATE[key] = make()
    return _WORKER_STATE[key]


@dataclass(frozen=True)
class _Task:
    dataset_path: str
    dataset_name: str
    split: str | None
    episode_index: int
    episode: Any
    config: EvalConfig
    data_module: str
    predictor_factory: PredictorFactory
    threshold: float


def run_task(task: _Task) -> dict:
    """Evaluate one (dataset, configuration, episode); returns the jsonl record."""
    api = _data_api(task.data_module)
    dataset = _cached(("dataset", task.data_module, task.dataset_path, task.split),
                      lambda: api.open_dataset(task.dataset_path, split=task.split))
    predictor = _cached(("predictor", task.config.method), lambda: task.predictor_factory(task.config.method))
    config = task.config
    loaded = api.load_episode(
        dataset, task.episode, reference_mode=config.mode,
        polygon_step=config.polygon_step or None,  # 0 = the exact reference masks
        reference_scale=None if config.reference_scale == 1.0 else config.reference_scale,
    )
    data = to_episode_data(loaded, task.episode)
    result = evaluate_episode(predictor, data, max_clicks=config.max_clicks, threshold=task.threshold,
                              reference_mode=config.mode)
    return {
        "dataset": task.dataset_name,
        "config": config.key,
        **asdict(config),
        "episode_index": task.episode_index,
        "episode_id": task.episode.episode_id,
        "kind": task.episode.kind,
        "ious": [round(v, 6) for v in result.ious],
        "clicks": [[c.x, c.y, int(c.is_positive)] for c in result.clicks],
        "seconds": result.seconds,
    }


# ---------------------------------------------------------------- jsonl store


def record_key(record: dict) -> tuple[str, str, int]:
    """(dataset, configuration key, episode index): the identity of one result line."""
    return record["dataset"], record["config"], int(record["episode_index"])


def read_records(path: Path) -> list[dict]:
    """Parse a results jsonl, skipping a truncated last line (an interrupted write)."""
    records: list[dict] = []
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line that an interrupted write left without its newline."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _append_record(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------- the run


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _settings(
    dataset_paths: Sequence[str], split: str | None, configs: Sequence[EvalConfig], limit: int | None,
    threshold: float, data_module: str, plans: Sequence[DatasetPlan], shard: tuple[int, int] | None,
) -> dict:
    return {
        "datasets": [
            {
                "path": str(Path(plan.path).resolve()),
                "name": plan.name,
                "episodes_total": plan.total,
                "episodes_skipped": plan.skipped,
                "episodes_selected": plan.selected_count,
                "episode_list_hash": plan.episode_list_hash,
                "selected_episodes_hash": plan.selected_hash,
            }
            for plan in plans
        ],
        "split": split,
        "configs": [asdict(config) | {"key": config.key} for config in configs],
        "limit": limit,
        "threshold": threshold,
        "data_module": data_module,
        "shard": list(shard) if shard else None,
    }


def _only_adds_configs(previous: dict, settings: dict) -> bool:
    """True when ``settings`` equals ``previous`` but for extra configurations (a run being extended)."""
    same_rest = {k: v for k, v in previous.items() if k != "configs"} == {
        k: v for k, v in settings.items() if k != "configs"}
    return same_rest and all(config in settings["configs"] for config in previous["configs"])


def run_evaluation(
    dataset_paths: Sequence[str],
    configs: Sequence[EvalConfig],
    out_dir: str | Path,
    split: str | None = None,
    limit: int | None = None,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    threshold: float = PREDICTION_THRESHOLD,
    data_module: str = DEFAULT_DATA_MODULE,
    predictor_factory: PredictorFactory = load_predictor,
    progress: bool = True,
    write_report: bool = True,
) -> Path:
    """Evaluate every configuration on every selected episode, resuming from ``out_dir``; returns ``out_dir``."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    plans = [plan_dataset(str(path), split, limit, shard, data_module) for path in dataset_paths]
    names = [plan.name for plan in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"two datasets share the name {names}; give folders with distinct names")
    settings = _settings(dataset_paths, split, configs, limit, threshold, data_module, plans, shard)
    config_path = out / RUN_CONFIG_FILE
    previous = json.loads(config_path.read_text()) if config_path.exists() else None
    if previous != settings:
        if previous is not None and not _only_adds_configs(previous, settings):
            raise ValueError(
                f"{out} already holds a run with different settings ({config_path}); "
                "use another --out folder or delete it (adding methods or modes to a run is allowed)"
            )
        config_path.write_text(json.dumps(settings, indent=2))

    jsonl = out / EPISODES_FILE
    _drop_partial_last_line(jsonl)
    done = {record_key(r) for r in read_records(jsonl)}
    tasks = [
        _Task(plan.path, plan.name, split, index, episode, config, data_module, predictor_factory, threshold)
        for plan in plans
        for config in configs
        for index, episode in plan.selected
        if (plan.name, config.key, index) not in done
    ]
    total = sum(len(plan.selected) for plan in plans) * len(configs)
    with tqdm(total=total, initial=total - len(tasks), desc="eval", unit="ep", disable=not progress,
              dynamic_ncols=True) as bar:
        if workers == 1 or len(tasks) <= 1:
            _init_worker(single_thread=False)
            for task in tasks:
                _append_record(jsonl, run_task(task))
                bar.update(1)
        else:
            previous_handler = None
            if threading.current_thread() is threading.main_thread():
                # SIGTERM → KeyboardInterrupt, so leaving the with-block terminates the workers.
                previous_handler = signal.signal(signal.SIGTERM, _interrupt)
            try:
                context = multiprocessing.get_context("spawn")
                with context.Pool(workers, initializer=_init_worker, initargs=(True,)) as pool:
                    for record in pool.imap_unordered(run_task, tasks, chunksize=1):
                        _append_record(jsonl, record)
                        bar.update(1)
            finally:
                if previous_handler is not None:
                    signal.signal(signal.SIGTERM, previous_handler)
    if write_report:
        from refcut.evaluation.report import write_report as _write_report

        _write_report(out)
    return out


def merge_runs(out_dir: str | Path, run_dirs: Sequence[str | Path]) -> Path:
    """Join shard folders of one run into ``out_dir`` (checked complete) and write its report."""
    from refcut.evaluation.report import write_report

    if not run_dirs:
        raise ValueError("give at least one run folder to merge")
    settings_list = []
    for run_dir in run_dirs:
        path = Path(run_dir) / RUN_CONFIG_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: not a refcut eval run folder")
        settings_list.append(json.loads(path.read_text()))

    def without_shard(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k != "shard"}

    base = without_shard(settings_list[0])
    for run_dir, settings in zip(run_dirs, settings_list):
        if without_shard(settings) != base:
            raise ValueError(f"{run_dir} was run with different settings than {run_dirs[0]}; cannot merge")
    records: dict[tuple, dict] = {}
    for run_dir in run_dirs:
        for record in read_records(Path(run_dir) / EPISODES_FILE):
            records.setdefault(record_key(record), record)
    expected = {
        (dataset["name"], config["key"], index)
        for dataset in base["datasets"]
        for config in base["configs"]
        for index in range(dataset["episodes_selected"])
    }
    missing = expected - set(records)
    if missing:
        example = sorted(missing)[0]
        raise ValueError(f"merge incomplete: {len(missing)} results missing (e.g. {example}); "
                         "finish or add the missing shards")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_CONFIG_FILE).write_text(json.dumps(base | {"shard": None, "merged_from": [str(d) for d in run_dirs]},
                                                   indent=2))
    ordered = sorted(records.values(), key=record_key)
    with (out / EPISODES_FILE).open("w") as handle:
        for record in ordered:
            handle.write(json.dumps(record) + "\n")
    write_report(out)
    return out
