"""What the pool invariants cost and what the pool store saves, measured on this machine.

    python bench/sampling.py                    # the smoke DDPM, CPU (or CUDA when present)
    python bench/sampling.py --arch paper --device cuda --images 256 --batch 128

Two ratios, each against a named baseline timed in the same run, medians of --runs runs
after one warm-up:

1. per-image noise / batched noise. synthaug draws every image's noise (initial and each
   stochastic step) from the image's own torch.Generator, so an image does not depend on
   the batch it was generated in (the content-addressing invariant). Baseline: one
   generator for the whole batch, as a diffusers pipeline draws it. Same UNet, same DDIM
   schedule, same batch. A ratio near 1 means the invariant is free.
2. generate / read. A trial that asks the DDPM server for a pool prefix already on disk
   reads it (synthaug.pools.store.PoolStore) instead of sampling it again. Baseline: sampling the
   same images. The ratio is how much a second trial or a second sweep saves per image.

Weights are untrained (the speed of a forward pass does not depend on them).

Measured (2026-11-25, `python bench/sampling.py --runs 5`, torch 2.14.1, a 2-vCPU VM, one
torch thread, nothing else running; smoke UNet, 620,275 parameters, 64 images, batch 64,
DDIM 20 steps, eta 1):

    sample, per-image noise (synthaug)   6.71 s   9.5 images/s
    sample, batched noise (baseline)     7.09 s   9.0 images/s    per-image / batched: 0.95x the time
    read the prefix from the pool store  1.3 ms                   generate / read: 5,203x

so batch independence costs nothing measurable on CPU, and a pool read once generated is
three to four orders of magnitude cheaper than sampling it again. Not yet run on a GPU.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch

from measure import median_time
from synthaug.config import SMOKE_DDPM
from synthaug.core.devices import made_on, numerics
from synthaug.diffusion.ddpm import DDPMConfig, build_unet
from synthaug.diffusion.sampling import SamplerConfig, build_scheduler, image_seed, sample, to_uint8
from synthaug.pools.store import PoolKey, PoolStore
from synthaug.sweep.cli import OneLineParser

ARCHS = {"smoke": SMOKE_DDPM, "paper": DDPMConfig()}


@torch.inference_mode()
def sample_batched_noise(unet, sampler: SamplerConfig, n: int, batch: int, device: str, seed: int = 0,
                         scheduler_config: dict | None = None) -> np.ndarray:
    """The baseline: one generator a batch (a diffusers pipeline's way), same schedule and steps."""
    scheduler = build_scheduler(sampler, scheduler_config=scheduler_config)
    out = []
    for start in range(0, n, batch):
        g = torch.Generator(device="cpu").manual_seed(seed + start)
        size = min(batch, n - start)
        x = torch.randn((size, 3, 32, 32), generator=g).to(device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                                enabled=device.startswith("cuda")):
                eps = unet(scheduler.scale_model_input(x, t), t.to(device)).sample
            x = scheduler.step(eps.float(), t, x, generator=g, eta=sampler.eta).prev_sample
        out.append(to_uint8(x))
    return np.concatenate(out)


def main(argv=None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, default="smoke")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta (> 0: a noise draw every step)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = ARCHS[args.arch]
    schedule = {"num_train_timesteps": cfg.num_train_timesteps, "beta_schedule": cfg.beta_schedule}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = build_unet(cfg).to(args.device).eval()
    sampler = SamplerConfig(name="ddim", steps=args.steps, eta=args.eta)
    key = PoolKey("bench", sampler, 0, "", 0, numerics(args.device))
    seeds = [image_seed(key.pool_id, k) for k in range(args.images)]

    made = {}
    ours = median_time(lambda: made.update(images=sample(unet, sampler, seeds, None, args.device,
                                                         batch_size=args.batch, progress=False,
                                                         scheduler_config=schedule)), args.runs, args.device)
    images = made["images"]
    batched = median_time(lambda: sample_batched_noise(unet, sampler, args.images, args.batch, args.device,
                                                       scheduler_config=schedule), args.runs, args.device)
    with tempfile.TemporaryDirectory() as folder:
        store = PoolStore(folder)
        store.append(key, 0, images, np.zeros(len(images), np.int64), np.ones(len(images), np.float32),
                     made_on(args.device))
        read = median_time(lambda: store.read(key.pool_id, stop=args.images), args.runs, args.device)

    n = args.images
    print(f"{args.arch} UNet ({sum(p.numel() for p in unet.parameters()):,} parameters), {args.device}, "
          f"{n} images, batch {args.batch}, DDIM {args.steps} steps eta {args.eta}, "
          f"{args.threads} CPU thread(s), median of {args.runs} runs")
    print(f"{'what':<44} {'s':>9} {'images/s':>10}")
    for label, seconds in (("sample, per-image noise (synthaug)", ours),
                           ("sample, batched noise (baseline)", batched),
                           ("read the pool prefix from disk (synthaug)", read)):
        print(f"{label:<44} {seconds:>9.4f} {n / seconds:>10.1f}")
    print(f"per-image / batched noise: {ours / batched:.3f}x the time")
    print(f"generate / read from the pool store: {ours / read:,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
