"""NoC@85 and IoU after one click per clothing label (an episode counts for each label of its target).

Usage: python docs/results/inference_session21/per_label.py docs/results/heldout_session14/n180/per_episode.csv
"""
import collections
import csv
import sys

import numpy as np

rows = [r for r in csv.DictReader(open(sys.argv[1]))
        if r["study"] == "main" and r["method"].startswith("refcut") and r["dataset"] == "clothing-co-parsing"]
by_label = collections.defaultdict(lambda: collections.defaultdict(list))
for r in rows:
    for label in r["episode_id"].split("|")[1].split(":")[-1].split("+"):
        by_label[label][r["mode"]].append((int(r["NoC@85"]), float(r["iou_1"])))
print("| label | episodes | NoC@85 both / none | IoU@1 both / none | clicks saved by the reference |")
print("|---|---|---|---|---|")
for label, modes in sorted(by_label.items(), key=lambda kv: -len(kv[1]["both"])):
    b, n = np.array(modes["both"]), np.array(modes["none"])
    print(f"| {label} | {len(b)} | {b[:, 0].mean():.2f} / {n[:, 0].mean():.2f} | {b[:, 1].mean():.2f} / {n[:, 1].mean():.2f} "
          f"| {int(n[:, 0].sum() - b[:, 0].sum()):+d} |")
