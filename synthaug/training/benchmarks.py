"""BENCHMARKS.md's throughput table: what a device does a second, as bench/gpu_suite.py measured it.

--dry-run divides a sweep's work by one row of it (--gpu-model picks the row; README, "What a sweep
costs"), so an estimate is only as good as the row it names, and it prints the row's source. A row
no run has measured yet says so in its source ("assumed ..."); gpu_suite.py replaces it with
measured figures for that device. The table sits between two markers, one row a (device, size):

    <!-- throughputs: ... -->
    | device | size | classifier images/s | ... |
    |---|---|...
    | NVIDIA H100 80GB HBM3 | full | 21000 | ... |
    <!-- /throughputs -->
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from synthaug.config import ConfigError
from synthaug.core.files import atomic_write
from synthaug.core.report import markdown_table

BEGIN = "<!-- throughputs: one row a device and size; written by bench/gpu_suite.py, read by --dry-run -->"
END = "<!-- /throughputs -->"
RUNS = "<!-- runs: bench/gpu_suite.py puts each run's section below, the newest first -->"
SKELETON = f"# Benchmarks\n\n## Throughputs the dry run uses\n\n{BEGIN}\n{END}\n\n## GPU suite runs\n\n{RUNS}\n"


def default_path() -> Path:
    """The repository's BENCHMARKS.md (beside the synthaug package)."""
    return Path(__file__).resolve().parents[2] / "BENCHMARKS.md"


@dataclass(frozen=True)
class Throughput:
    """Work one whole device does a second (bf16 autocast, channels_last on a GPU), a classifier's figures
    for each stem (synthaug.models.classifier.STEMS), since the two cost 15x apart in FLOPs an image."""

    device: str = field(metadata={"header": "device"})
    size: str = field(metadata={"header": "size"})     # "full": the study's models; "tiny": a code-path check
    # ResNet18 training at batch 256, one trial alone on the device: CIFAR stem ("strong", the labeller) and
    # torchvision's ImageNet stem ("study", the paper preset's trials)
    cifar_images: float = field(metadata={"header": "cifar-stem train images/s"})
    imagenet_images: float = field(metadata={"header": "imagenet-stem train images/s"})
    eval_images: float = field(metadata={"header": "eval images/s"})   # test images an epoch, batch 1024
    checkpoint_mib_s: float = field(metadata={"header": "checkpoint MiB/s"})  # a trial's state to a local file
    trials_per_gpu: float = field(metadata={"header": "trials a GPU"})       # the measured best of 1, 2, 4
    sharing_speedup: float = field(metadata={"header": "shared speed-up"})   # their summed rate / one alone
    ddpm_steps: float = field(metadata={"header": "DDPM train steps/s"})  # the paper UNet, batch 128
    ddpm_small_steps: float = field(metadata={"header": "DDPM steps/s at 16"})  # batch 16: an 8-way DDP share
    unet_image_evals: float = field(metadata={"header": "UNet image evals/s"})  # forward passes of one image
    source: str = field(metadata={"header": "source"})

    def train_images(self, stem: str) -> float:
        """Training images/s of one trial alone with that stem."""
        return self.imagenet_images if stem == "imagenet" else self.cifar_images

    def ddp_speedup(self, workers: int, batch: int) -> float:
        """How much faster `workers` data-parallel GPUs train a DDPM than one at global batch `batch`: a step
        costs a + b x images (fitted to batch 128 and 16), each worker takes batch / workers images, and the
        gradient all-reduce is not counted (an upper bound)."""
        if workers <= 1:
            return 1.0
        t_big, t_small = 1 / self.ddpm_steps, 1 / self.ddpm_small_steps
        per_image = max(0.0, (t_big - t_small) / (128 - 16))
        fixed = max(t_small - 16 * per_image, 0.0)
        return (fixed + batch * per_image) / (fixed + batch / workers * per_image)

    @property
    def on_cpu(self) -> bool:
        """A CPU's row (bench/measure.py names it "cpu (<machine>, <n> cores)"): its "GPU" is the machine."""
        return self.device.lower().startswith("cpu")

    @property
    def assumed(self) -> bool:
        return self.source.startswith("assumed")

    def describe(self) -> str:
        return f"the throughputs of {self.device} ({self.size}), {self.source}"


COLUMNS = [f.name for f in fields(Throughput)]
HEADERS = [f.metadata["header"] for f in fields(Throughput)]
NUMBERS = {f.name for f in fields(Throughput) if f.type == "float"}


def read_throughputs(path: str | Path) -> list[Throughput]:
    """Every row of the table in `path`; ConfigError naming --benchmarks when it is missing or unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"--benchmarks {path}: cannot read it ({err.strerror or err})") from None
    if BEGIN not in text or END not in text:
        raise ConfigError(f"--benchmarks {path}: no throughput table (the lines between {BEGIN!r} and {END!r})")
    return _rows(text, path)


def _rows(text: str, path: Path) -> list[Throughput]:
    """The rows between the markers of `text` (read from `path`)."""
    rows = []
    for line in text.split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) or cells == HEADERS or set(line) <= set("|-: "):
            continue
        values = dict(zip(COLUMNS, cells))
        try:
            rows.append(Throughput(**{k: float(v) if k in NUMBERS else v for k, v in values.items()}))
        except ValueError:
            raise ConfigError(f"--benchmarks {path}: a throughput row has a non-number: {line.strip()}") from None
    return rows


def find_throughput(path: str | Path, device: str) -> Throughput:
    """The row whose device contains `device` (any case): a full-size one before a tiny one, a measured one
    before an assumed one."""
    rows = read_throughputs(path)
    matches = sorted((r for r in rows if device.lower() in r.device.lower()),
                     key=lambda r: (r.size != "full", r.assumed))
    if not device or not matches:
        known = "; ".join(f"{r.device} ({r.size})" for r in rows) or "none"
        raise ConfigError(f"--gpu-model: a device {path} has figures for ({known}), got {device!r}")
    return matches[0]


def write_throughput(path: str | Path, row: Throughput) -> None:
    """Put `row` in the table of `path` (made when missing), replacing the row of the same device and size, and
    an assumed row of that size for a device its name contains (the measured "NVIDIA H100 80GB HBM3" replaces
    the assumed "NVIDIA H100")."""
    path = Path(path)
    text = _text(path)
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    rows = [r for r in _rows(text, path) if r.size != row.size or not (
        r.device == row.device or r.assumed and r.device.lower() in row.device.lower())]
    table = markdown_table(HEADERS, [[_cell(getattr(r, c)) for c in COLUMNS] for r in [*rows, row]])
    atomic_write(path, (before + BEGIN + "\n" + table + "\n" + END + after).encode())


def write_run(path: str | Path, key: str, section: str) -> None:
    """Put one run's Markdown `section` in `path` (made when missing): replace the section of the same `key`,
    else insert it first under the runs marker."""
    path = Path(path)
    text = _text(path)
    begin, end = f"<!-- run {key} -->", f"<!-- /run {key} -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        if RUNS not in text:
            text = text.rstrip("\n") + f"\n\n{RUNS}\n"
        head, rest = text.split(RUNS, 1)
        text = f"{head}{RUNS}\n\n{block}{rest}"
    atomic_write(path, text.encode())


def _text(path: Path) -> str:
    """The file's text, holding the throughput markers (added when missing)."""
    text = path.read_text() if path.exists() else SKELETON
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Throughputs the dry run uses\n\n{BEGIN}\n{END}\n"
    return text


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) and value < 100 else \
        f"{value:.0f}" if isinstance(value, float) else str(value).replace("|", "/")


def cpu_row(size: str, path: str | Path | None = None) -> Throughput | None:
    """The CPU row of that size (the models of the preset of that name) in `path` (default the repository's
    BENCHMARKS.md), measured before assumed; None when there is none."""
    rows = [r for r in read_throughputs(path or default_path()) if r.on_cpu and r.size == size]
    return min(rows, key=lambda r: r.assumed) if rows else None
