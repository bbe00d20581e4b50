"""Two CPU processes with gloo + DDP train a few steps and end with identical parameters."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, run_dir: str, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from train_fixtures import FakePairSource, tiny_config

    from refcut.training import trainer

    captured = {}
    original = trainer.training_step

    def spy(model, *args, **kwargs):
        output = original(model, *args, **kwargs)
        captured["model"] = model
        captured.setdefault("losses", []).append(float(output.loss))
        return output

    trainer.training_step = spy
    config = tiny_config(steps=3, dump_every=0, checkpoint_every=3)
    trainer.train(config, run_dir, pair_source=FakePairSource(), progress=False)
    state = {k: v.detach().cpu() for k, v in captured["model"].state_dict().items()}
    torch.save({"state": state, "losses": captured["losses"]}, Path(out_dir) / f"rank{rank}.pt")


def test_ddp_two_cpu_processes_keep_parameters_identical(tmp_path):
    world_size = 2
    mp.spawn(_worker, args=(world_size, _free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=world_size,
             join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    first, second = results[0]["state"], results[1]["state"]
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # Ranks saw different data (otherwise the test would prove nothing about gradient averaging).
    assert results[0]["losses"] != results[1]["losses"]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    env = (tmp_path / "run" / "environment.json").read_text()
    assert '"effective_batch_size": 4' in env and '"world_size": 2' in env
