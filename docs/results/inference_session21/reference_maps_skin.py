"""The reference maps on skin targets: reference, its positive mask, target, ground truth, nearest positive
exemplar cosine, nearest positive minus nearest negative, the ridge score (session 21).

Usage: python docs/results/inference_session21/reference_maps_skin.py OUT.png
"""
import sys, numpy as np, importlib, cv2, torch, torch.nn.functional as F
from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.evaluation.protocol import apply_reference
from refcut.predictor.predictor import RefCutPredictor
from refcut.predictor.transforms import full_box
from refcut.model.click_decoder import fit_reference_ridge
torch.set_num_threads(1)
api = importlib.import_module("refcut.data")
ds = "../shared/data/clothing-co-parsing"
plan = plan_dataset(ds, "train", 300, None, "refcut.data"); dataset = api.open_dataset(ds, split="train")
p = RefCutPredictor.from_pretrained()
rows = []; n = 0
def norm(m):
    m = m - m.min(); m = m / (m.max() + 1e-6); return cv2.resize((m * 255).astype(np.uint8), (160, 240), interpolation=cv2.INTER_NEAREST)
for idx, ep in plan.selected:
    if "single:skin" not in ep.episode_id and "pair:hair+skin" not in ep.episode_id: continue
    data = to_episode_data(api.load_episode(dataset, ep, reference_mode="both"), ep)
    apply_reference(p, data, "both"); p.set_image(data.image)
    H, W = data.gt_mask.shape
    view = p._view(p._image_key, p._image, full_box(H, W))
    maps = p.model.decoder.reference_maps(view.unit_features, p._prompt)[0]
    feats = next(reversed(p._feature_cache.values()))
    w = fit_reference_ridge(F.normalize(feats, dim=1), torch.from_numpy(data.positive_mask)[None, None].float(), 10.0)[0]
    ridge = (torch.einsum("dhw,d->hw", view.unit_features[0], w[:-1]) + w[-1]).numpy()
    img = cv2.resize(data.image, (160, 240)); gt = cv2.resize(data.gt_mask.astype(np.uint8) * 255, (160, 240))
    ref = cv2.resize(data.reference_image, (160, 240)); refm = cv2.resize(data.positive_mask.astype(np.uint8) * 255, (160, 240))
    tiles = [ref, np.stack([refm] * 3, -1), img, np.stack([gt] * 3, -1)] + [np.stack([norm(x)] * 3, -1) for x in (maps[2].numpy(), (maps[2] - maps[3]).numpy(), ridge)]
    rows.append(np.concatenate(tiles, 1)); n += 1
    if n >= 5: break
cv2.imwrite(sys.argv[1], cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
