"""Data-parallel generator training on the process group a GPU run makes, shown on the CPU.

A GPU run's group (process_group_backend(use_gpu=True)) is stood in for by the same "device:backend"
pairs with gloo serving the CUDA half: what NCCL would refuse (a CPU tensor in a collective of a group
with no CPU backend) is refused here too. The gradients DDP all-reduces are CUDA tensors on a GPU, so
here they go through a gloo group of their own. Two ranks train the same steps through DDPMTraining.run
with a checkpoint due by the clock (the collective that crashed at step 1 on NCCL at 41ad95a).
"""

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from synthaug.diffusion.ddpm import DDPMConfig
from synthaug.diffusion.training import Checkpointing, DDPMTraining, gather_rng_states, process_group_backend

from processes import free_port

TINY = DDPMConfig(block_out_channels=(16, 32), layers_per_block=1, attention=False, num_train_timesteps=100,
                  train_steps=6, batch_size=8, lr=2e-3)


def cpu_stand_in(backend: str) -> str:
    """The backend string with gloo in NCCL's place, still serving CUDA only where NCCL did."""
    pairs = backend.split(",") if ":" in backend else [f"cuda:{backend}" if backend == "nccl" else backend]
    return ",".join(pair.replace("nccl", "gloo") for pair in pairs)


def _rank(rank: int, world: int, port: int, folder: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(cpu_stand_in(process_group_backend(use_gpu=True)), rank=rank, world_size=world)
    gradients = dist.new_group(backend="gloo")      # NCCL's part on a GPU: the CUDA gradients
    try:
        x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
        training = DDPMTraining(TINY, x, None, seed=0, device="cpu", rank=rank, world_size=world, autocast=False,
                                wrap=lambda m: DistributedDataParallel(m, process_group=gradients))

        policy = Checkpointing(every_steps=1000, every_seconds=1e-9, log_every=2)    # due by the clock
        training.run(Path(folder) / "ckpt.pt", policy, gather_rng=gather_rng_states)
        results.put((rank, training.step, None))
    except Exception as err:                  # noqa: BLE001 - reported to the test
        results.put((rank, None, f"{type(err).__name__}: {err}"))
    finally:
        dist.destroy_process_group()


def test_the_stand_in_for_an_nccl_group_refuses_what_nccl_refuses():
    assert cpu_stand_in("nccl") == "cuda:gloo"
    assert cpu_stand_in(process_group_backend(use_gpu=True)) == "cpu:gloo,cuda:gloo"
    assert process_group_backend(use_gpu=False) == "gloo"


def test_two_ranks_train_and_checkpoint_on_a_gpu_runs_process_group(tmp_path):
    ctx = mp.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    ranks = [ctx.Process(target=_rank, args=(r, 2, port, str(tmp_path), results)) for r in range(2)]
    for p in ranks:
        p.start()
    found = {rank: (step, error) for rank, step, error in (results.get(timeout=120) for _ in ranks)}
    for p in ranks:
        p.join(timeout=30)
    assert found == {0: (TINY.train_steps, None), 1: (TINY.train_steps, None)}
    state = torch.load(Path(tmp_path) / "ckpt.pt", weights_only=True)
    assert state["step"] == 4 and len(state["rng"]) == 2     # saved by the clock at a log step, both ranks' RNG
