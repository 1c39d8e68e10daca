"""Storage faults caused on purpose: a damaged pool shard, data cache, generator or labeller is never used
(rebuilt, or reported in one line), and a write stopped by a file-size limit leaves the previous state."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthaug.config import preset
from synthaug.core.files import DamagedFile
from synthaug.data.sources import load_dataset
from synthaug.generation.prepare import prepare_generator
from synthaug.generation.server import DDPMServer
from synthaug.pools.store import PoolStore

TEN = tuple(f"c{i}" for i in range(10))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny preset's conditional generator, and its unconditional one with its labeller, trained once."""
    cache = tmp_path_factory.mktemp("cache")
    prepare_generator(preset("tiny").generator("ddpm-uncond"), "shapes", cache, device="cpu", progress=False)
    spec = preset("tiny").generator("ddpm-cond")
    return spec, cache, prepare_generator(spec, "shapes", cache, device="cpu", progress=False)


def shards(root: Path) -> list[Path]:
    return sorted(root.rglob("*.npz"))


def test_a_truncated_or_altered_pool_shard_is_moved_aside_and_made_again_byte_for_byte(prepared, tmp_path, capsys):
    spec, _, gen = prepared
    first = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    original = first.take(3, 20, seed=0).images
    (shard,) = shards(tmp_path)
    made = len(np.load(shard)["labels"])

    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])              # truncated
    again = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    assert np.array_equal(again.take(3, 20, seed=0).images, original) and again.counters()["generated"] == made
    assert f"pool shard {shard} is damaged" in capsys.readouterr().out
    assert (shard.parent / f"{shard.name}.damaged").exists()

    with np.load(shard) as npz:                                                   # altered, a valid file
        arrays = {k: npz[k].copy() for k in npz.files}
    arrays["images"][0, 0, 0, 0] ^= 0xFF
    np.savez(shard, **arrays)
    third = DDPMServer(gen, spec, str(tmp_path), classes=TEN, device="cpu", progress=False)
    assert np.array_equal(third.take(3, 20, seed=0).images, original) and third.counters()["generated"] == made
    assert "its checksum does not match its arrays" in capsys.readouterr().out


def test_a_damaged_data_cache_is_decoded_again(tmp_path, capsys):
    dataset = load_dataset("shapes", tmp_path)
    (cache_file,) = (tmp_path / "datasets").glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    again = load_dataset("shapes", tmp_path)
    assert "data cache" in capsys.readouterr().out and np.array_equal(again.train_x, dataset.train_x)
    assert load_dataset("shapes", tmp_path).digest == dataset.digest                 # and cached whole again


def test_damaged_generator_or_labeller_weights_are_one_line_never_used(prepared, tmp_path):
    spec, cache, gen = prepared
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    weights = next((copy / "generators").glob("ddpm-cond-*/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0xFF                                                               # a flipped bit in a weight
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedFile) as err:
        prepare_generator(spec, "shapes", copy, device="cpu", progress=False)
    assert "is damaged (its weights" in str(err.value) and "delete the folder to train it again" in str(err.value)
    assert "\n" not in str(err.value)

    shutil.rmtree(copy)
    shutil.copytree(cache, copy)
    labeller = next((copy / "labellers").rglob("labeller.pt"))
    labeller.write_bytes(labeller.read_bytes()[:-100])
    with pytest.raises(DamagedFile, match=r"labeller .* is damaged .*delete it to train it again"):
        prepare_generator(preset("tiny").generator("ddpm-uncond"), "shapes", copy, device="cpu", progress=False)


FILL_UNDER_A_LIMIT = """
import resource, signal, sys
import numpy as np
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.pools.store import PoolKey, PoolStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # a write past the limit fails with EFBIG
store, key = PoolStore(sys.argv[1]), PoolKey("w", SamplerConfig(), 0, "", 0, "cpu/float32")
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
big = np.zeros((512, 32, 32, 3), np.uint8)               # 1.5 MB: more than the limit allows
try:
    store.append(key, 16, big, np.zeros(512, np.int64), np.ones(512, np.float32), "here")
except OSError as err:
    print(err)
    sys.exit(3)
"""


def test_a_write_stopped_by_a_size_limit_leaves_the_previous_shards_readable_and_says_so(tmp_path):
    from synthaug.diffusion.sampling import SamplerConfig
    from synthaug.pools.store import PoolKey

    store, key = PoolStore(tmp_path), PoolKey("w", SamplerConfig(), 0, "", 0, "cpu/float32")
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    store.append(key, 0, images, np.zeros(16, np.int64), np.ones(16, np.float32), "here")
    done = subprocess.run([sys.executable, "-c", FILL_UNDER_A_LIMIT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 3, done.stderr[-2000:]
    assert "was not written (File too large); the previous version, if any, is unchanged" in done.stdout
    assert store.length(key.pool_id) == 16 and np.array_equal(store.read(key.pool_id).images, images)
    assert [p.name for p in store.folder(key.pool_id).iterdir() if p.name.endswith(".tmp")] == []


def test_a_folder_written_whole_is_the_old_one_or_the_new_one(tmp_path):
    from synthaug.core.files import atomic_directory

    target = tmp_path / "generator"
    with atomic_directory(target) as folder:
        (folder / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as folder:
        (folder / "weights").write_text("half")
        raise RuntimeError("stopped while writing")
    assert (target / "weights").read_text() == "old"
    with atomic_directory(target) as folder:
        (folder / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]      # no temporary or old folder left
