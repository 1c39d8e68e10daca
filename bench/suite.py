"""The GPU suite's frame: how big each part's work is, a result row, the suite that gathers rows and
writes them, and the processes that stand in for Ray's trials on one device.

A suite writes its rows through: every row is appended to a JSON-lines file (--rows) the moment it is
measured, and BENCHMARKS.md's section for the run is rewritten from that file. bench/on_device.sh runs the
parts as separate stages, each under its own time limit, into one rows file: a stage killed by its limit
loses only the row it was measuring.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import queue
from dataclasses import dataclass, field
from pathlib import Path

from measure import device_name, versions
from synthaug.config import SMOKE_DDPM, TINY_DDPM
from synthaug.core.report import markdown_table
from synthaug.diffusion.ddpm import IMPROVED_DDPM, DDPMConfig


@dataclass(frozen=True)
class Size:
    """How big each part's work is."""

    name: str = "full"
    width: int = 64                     # the study's ResNet18
    images: int = 16_384                # classifier training images an epoch (64 batches)
    trial_images: int = 50_000          # a paper trial's epoch: all of CIFAR-10's training split
    test_images: int = 10_000           # ... and its test split, evaluated after each epoch
    shares: tuple = (1, 2, 4)           # trials a GPU, each its own process
    batch: int = 256                    # the study's batch
    loader_workers: int = 8             # the torchvision baseline's DataLoader processes
    compile_backend: str = "inductor"
    unet: DDPMConfig = IMPROVED_DDPM    # the paper preset's generators
    samplers: tuple = (("ddim", 20), ("ddim", 50), ("dpmpp-2m", 20))
    sample_images: int = 768
    sample_batch: int = 256             # GeneratorSpec.sample_batch_size
    sample_batches: tuple = (256, 1024)
    ddpm_batch: int = 128               # the paper batch
    ddpm_small_batch: int = 16          # one worker's share of it in an 8-way data-parallel run
    ddpm_steps: int = 10                # timed optimizer steps a repetition
    warmup_images: int = 64             # a class, 10 classes
    warmup_steps: int = 100             # DDIM steps: the paper preset's sampler
    replicas: int = 4
    reps: int = 3


SIZES = {
    "full": Size(),
    # the smoke preset's models on a CPU (synthaug.config: SMOKE_TRAIN, SMOKE_DDPM, SMOKE_SAMPLER): the row the
    # dry run of a smoke sweep on CPUs divides by; its "batch 128" DDPM figure is at the smoke batch of 16
    "smoke": Size(name="smoke", width=16, images=1024, trial_images=1000, test_images=1000, shares=(1, 2), batch=64,
                  loader_workers=0, compile_backend="eager", unet=SMOKE_DDPM, samplers=(("ddim", 20),),
                  sample_images=64, sample_batch=64, sample_batches=(64,), ddpm_batch=16, ddpm_small_batch=8,
                  ddpm_steps=5, warmup_images=8, warmup_steps=20, replicas=2, reps=3),
    "tiny": Size(name="tiny", width=4, images=256, trial_images=256, test_images=64, shares=(1, 2), batch=64,
                 loader_workers=0, compile_backend="eager", unet=TINY_DDPM,
                 samplers=(("ddim", 2),), sample_images=8, sample_batch=8,
                 sample_batches=(8, 16), ddpm_batch=4, ddpm_small_batch=2, ddpm_steps=1, warmup_images=4,
                 warmup_steps=2, replicas=2, reps=2),
}


@dataclass
class Row:
    part: str
    what: str
    value: float | None                 # None: failed, or not measurable here
    unit: str
    vs: str = ""                        # the ratio against the baseline named
    peak_gib: float | None = None
    note: str = ""


@dataclass
class Suite:
    size: Size
    device: str
    reps: int
    rows_file: Path                     # every row so far, one JSON object a line (several stages append)
    on_row: object = None               # called after each row is added (rewrites BENCHMARKS.md)
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)     # what the throughput row is made of

    def __post_init__(self):
        if self.rows_file.exists():
            for line in self.rows_file.read_text().splitlines():
                record = json.loads(line)
                if "figure" in record:
                    self.figures[record["figure"]] = record["value"]
                else:
                    self.rows.append(Row(**record))

    def add(self, *rows: Row) -> None:
        for row in rows:
            self.rows.append(row)
            self._append(dataclasses.asdict(row))
            print(f"  {row.what}: {figure(row.value, '-')} {row.unit}" + (f"  ({row.vs})" if row.vs else "")
                  + (f"  peak {row.peak_gib:.2f} GiB" if row.peak_gib is not None else "")
                  + (f"  [{row.note}]" if row.note else ""), flush=True)
        if self.on_row:
            self.on_row()

    def figure(self, name: str, value: float) -> None:
        """One number of the device's throughput row, kept across stages."""
        self.figures[name] = value
        self._append({"figure": name, "value": value})

    def _append(self, record: dict) -> None:
        with open(self.rows_file, "a") as f:
            f.write(json.dumps(record) + "\n")


def side_by_side(task, arguments: list[tuple], env: list[dict] | None = None) -> list:
    """task(*args, barrier) in one spawned process each (with env[i] set in process i before it runs), all
    released at once when every one is ready (its model built, warmed up); their results in order. An
    error in one is raised here."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(arguments)), ctx.Queue()
    workers = [ctx.Process(target=_run_task, args=(task, args, barrier, results, i, (env or [{}] * len(arguments))[i]))
               for i, args in enumerate(arguments)]
    for worker in workers:
        worker.start()
    found: dict = {}
    try:
        while len(found) < len(workers):
            try:
                index, value = results.get(timeout=5)
                found[index] = value
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    raise RuntimeError(f"a worker process died (exit codes {[w.exitcode for w in workers]})") from None
    finally:
        for worker in workers:
            worker.join(timeout=60)
    errors = [v for v in found.values() if isinstance(v, str)]
    if errors:
        raise RuntimeError(errors[0])
    return [found[i] for i in range(len(arguments))]


def _run_task(task, args, barrier, results, index, env: dict) -> None:
    import os

    os.environ.update(env)
    try:
        results.put((index, task(*args, barrier)))
    except BaseException as err:                    # noqa: BLE001 - reported to the parent, which raises it
        barrier.abort()
        results.put((index, f"{type(err).__name__}: {err}"))


def figure(value: float | None, missing: str = "failed") -> str:
    return missing if value is None else f"{value:,.3g}" if value < 100 else f"{value:,.0f}"


def render(suite: Suite, started: str, commit: str, finished: bool) -> str:
    table = markdown_table(["part", "what", "figure", "against", "peak GPU memory", "note"], [
        [row.part, row.what, f"{figure(row.value)} {row.unit}", row.vs,
         "-" if row.peak_gib is None else f"{row.peak_gib:.2f} GiB", row.note] for row in suite.rows])
    return (f"### {device_name(suite.device)}, --size {suite.size.name}, {started}\n\n"
            f"{versions()}; commit {commit}; medians of {suite.reps} repetitions after a warm-up"
            + ("" if finished else "; **cut short: the parts below are all it measured**") + f"\n\n{table}\n")
