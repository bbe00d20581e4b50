"""Run ``reference_yield=0.05`` on train-split episodes (mode ``both``); rerun without it where it triggered.

Episodes where the rule never triggers are identical with and without it, so only the triggered ones
are rerun. Each episode stops at 90% IoU (NoC@85 and NoC@90 are exact).

    python docs/results/reference_yield/triggered_episodes.py ../shared/data/car-parts 240 OUT.jsonl
    python docs/results/reference_yield/triggered_episodes.py --summary OUT.jsonl [OUT2.jsonl ...]
"""

import importlib
import json
import sys

from refcut.evaluation.metrics import number_of_clicks as noc


def summary(paths: list[str]) -> None:
    for path in paths:
        rows = [json.loads(line) for line in open(path)]
        hit = [r for r in rows if r["trig"]]
        d85 = [noc(r["rule"], 0.85) - noc(r["base"], 0.85) for r in hit]
        d90 = [noc(r["rule"], 0.9) - noc(r["base"], 0.9) for r in hit]
        print(f"{path}: {len(rows)} episodes, triggered in {len(hit)} (at clicks {sorted(r['trig'] for r in hit)})")
        print(f"  NoC@85 change, summed: {sum(d85):+d} ({sum(d85) / len(rows):+.3f} per episode; "
              f"{sum(d < 0 for d in d85)} better / {sum(d > 0 for d in d85)} worse); NoC@90 summed: {sum(d90):+d}")


def main(dataset_path: str, limit: int, out: str) -> None:
    import torch

    from refcut.evaluation.protocol import iter_episode
    from refcut.evaluation.runner import plan_dataset, to_episode_data
    from refcut.predictor.predictor import RefCutPredictor

    torch.set_num_threads(1)
    api = importlib.import_module("refcut.data")
    plan = plan_dataset(dataset_path, "train", limit, None, "refcut.data")
    dataset = api.open_dataset(dataset_path, split="train")
    rule = RefCutPredictor.from_pretrained(reference_yield=0.05)
    base = RefCutPredictor.from_pretrained(reference_yield=None)

    def run(predictor, data):
        ious, trig = [], None
        for k, step in enumerate(iter_episode(predictor, data, 20, reference_mode="both")):
            ious.append(step.iou)
            if trig is None and predictor._yield_from is not None:
                trig = k + 1
            if step.iou >= 0.9:
                break
        return ious, trig

    with open(out, "w") as f:
        for _, episode in plan.selected:
            data = to_episode_data(api.load_episode(dataset, episode, reference_mode="both"), episode)
            ious, trig = run(rule, data)
            record = dict(id=episode.episode_id, rule=ious, trig=trig)
            if trig is not None:
                record["base"] = run(base, data)[0]
            f.write(json.dumps(record) + "\n")
            f.flush()


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(sys.argv[2:])
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
