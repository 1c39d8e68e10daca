"""Pools that travel (synthaug.pools.transfer): export, then import into another cache, byte for byte; a file
that does not match is refused in one line and writes nothing. No Ray, no training: a cache built by hand."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from synthaug.diffusion.ddpm import weights_digest
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.models.classifier import resnet18
from synthaug.pools.__main__ import main
from synthaug.pools.store import CALIBRATION_SEED, UNCONDITIONAL, PoolKey, PoolStore

GENERATOR = "generators/ddpm-cond-0123456789abcdef"


def make_cache(root: Path, seed: int = 0) -> tuple[Path, list[PoolKey]]:
    """A trained-here generator (its folder), a labeller, a class-conditional pool of two shards, an
    unconditional pool labelled by that labeller and its calibration pool (a top_fraction filter's)."""
    torch.manual_seed(0)
    labeller = resnet18(3, width=8)
    labeller_digest = weights_digest(labeller)
    (root / "labellers" / "feedbeef").mkdir(parents=True)
    torch.save({"state_dict": labeller.state_dict(), "width": 8, "stem": "cifar", "num_classes": 3,
                "classes": ["a", "b", "c"], "test_acc": 0.9, "digest": labeller_digest},
               root / "labellers" / "feedbeef" / "labeller.pt")
    (root / GENERATOR / "unet").mkdir(parents=True)
    (root / GENERATOR / "weights.sha256").write_text("w" * 64)
    (root / GENERATOR / "unet" / "config.json").write_text("{}")
    store = PoolStore(root / "pools")
    rng = np.random.default_rng(seed)
    keys = [PoolKey("w" * 64, SamplerConfig(steps=4), 1, "", 0, "cpu/float32"),
            PoolKey("w" * 64, SamplerConfig(steps=4), UNCONDITIONAL, labeller_digest, 0, "cpu/float32"),
            PoolKey("w" * 64, SamplerConfig(steps=4), UNCONDITIONAL, labeller_digest, CALIBRATION_SEED, "cpu/float32")]
    for key in keys:
        for start, n in ((0, 16), (16, 8)):
            store.append(key, start, rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, n),
                         rng.random(n), "here", labeller_digest)
    return root, keys


def files_under(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and not f.name.endswith(".lock")} if root.exists() else {}


@pytest.fixture
def exported(tmp_path, capsys):
    """The cache, its pools' keys, the export of two of them (one named by a prefix; the calibration pool comes
    with the unconditional one) and what the export printed."""
    cache, keys = make_cache(tmp_path / "a")
    archive = tmp_path / "pools.tar.gz"
    assert main(["export", keys[0].pool_id, keys[1].pool_id[:8], "--to", str(archive), "--cache", str(cache)]) == 0
    return cache, keys, archive, capsys.readouterr().out


def test_an_exported_pool_imports_byte_for_byte_with_its_generator_and_labeller(exported, tmp_path, capsys):
    cache, keys, archive, out = exported
    assert f"exported 3 pool(s) (72 images), 1 generator(s) and 1 labeller(s) to {archive}" in out
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    pool = next(p for p in manifest["pools"] if p["pool_id"] == keys[1].pool_id)
    assert pool["class"] == "unconditional" and pool["images"] == 24 and pool["seed"] == 0
    assert pool["sampler"] == {"name": "ddim", "steps": 4, "eta": 0.0} and pool["numerics"] == "cpu/float32"
    assert pool["generator_kind"] == "ddpm-cond" and pool["generator_entry"] == GENERATOR
    assert pool["labeller_digest"] == keys[1].labeller_digest and pool["filter"].startswith("none")
    assert sorted(pool["files"]) == [f"pools/{keys[1].pool_id}/{n}" for n in
                                     ("000000000-000000016.npz", "000000016-000000024.npz", "pool.json")]

    fresh = tmp_path / "b"
    assert main(["import", str(archive), "--cache", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert f"pool {keys[0].pool_id} (24 images, class 1, seed 0): imported into {fresh / 'pools'}" in out
    assert f"generator {GENERATOR}: imported" in out and "labeller labellers/feedbeef: imported" in out
    assert files_under(fresh) == files_under(cache)
    for key in keys:                    # served as if made here: the same store reads the same images
        a, b = PoolStore(cache / "pools").read(key.pool_id), PoolStore(fresh / "pools").read(key.pool_id)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.confidence, b.confidence)

    assert main(["import", str(archive), "--cache", str(fresh)]) == 0        # again: nothing to do
    out = capsys.readouterr().out
    assert out.count("the same; left as it is") == 5 and "imported into" not in out
    assert files_under(fresh) == files_under(cache)


def rewrite(archive: Path, name: str, change) -> None:
    """The export with member `name`'s bytes replaced by change(bytes)."""
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members:
            data = change(data) if member.name == name else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def with_manifest(edit):
    def change(data: bytes) -> bytes:
        manifest = json.loads(data)
        edit(manifest)
        return json.dumps(manifest).encode()
    return change


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize("member, change, said", [
    ("pools/{0}/000000016-000000024.npz", flip_last_byte, "pools/{0}/000000016-000000024.npz does not match its "
                                                          "sha256 in the manifest"),
    ("manifest.json", with_manifest(lambda m: m["pools"][0].update(seed=1)),
     "pool {0}: its manifest's key (weights wwwwwwwwwwww, class 1, seed 1, cpu/float32) gives pool id"),
    ("manifest.json", with_manifest(lambda m: m["pools"][0].update(pool_id="0" * 24)),
     "pool 000000000000000000000000: its manifest's key (weights wwwwwwwwwwww, class 1, seed 0, cpu/float32) gives "
     "pool id {0}"),
    ("manifest.json", with_manifest(lambda m: m["pools"][0]["files"].popitem()), "is in the file, not in the manifest"),
    ("manifest.json", with_manifest(lambda m: m["generators"][0].update(digest="v" * 64)),
     f"generator {GENERATOR}: its weights (wwwwwwwwwwwwwwww) are not the ones its manifest names (vvvvvvvvvvvvvvvv)"),
    ("manifest.json", lambda data: b"{", "its manifest.json is missing or not a manifest of pools"),
])
def test_a_tampered_export_is_refused_in_one_line_and_writes_nothing(exported, tmp_path, capsys, member, change,
                                                                      said):
    _, keys, archive, _ = exported
    rewrite(archive, member.format(keys[0].pool_id), change)
    capsys.readouterr()
    fresh = tmp_path / "b"
    assert main(["import", str(archive), "--cache", str(fresh)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert said.format(keys[0].pool_id) in captured.err, captured.err
    assert not fresh.exists()


def test_a_pool_with_other_images_under_the_same_id_is_refused_and_kept(exported, tmp_path, capsys):
    _, keys, archive, _ = exported
    other, _ = make_cache(tmp_path / "b", seed=1)          # the same keys, other images
    before = files_under(other)
    capsys.readouterr()
    assert main(["import", str(archive), "--cache", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pool {keys[0].pool_id}: {other / 'pools' / keys[0].pool_id} holds other " \
                                    f"images under that pool id (24 on disk); nothing imported" in err, err
    assert files_under(other) == before


@pytest.mark.parametrize("pool, said", [("0123abcd", "is no pool in"), ("", "is no pool in")])
def test_an_unknown_pool_is_one_line_and_no_file(tmp_path, capsys, pool, said):
    cache, keys = make_cache(tmp_path / "a")
    archive = tmp_path / "pools.tar"
    assert main(["export", keys[0].pool_id, pool, "--to", str(archive), "--cache", str(cache)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and said in captured.err, captured.err
    assert not archive.exists()


def test_python_m_synthaug_pools_lists_the_pools_of_a_cache(tmp_path):
    import os
    import subprocess
    import sys

    cache, keys = make_cache(tmp_path / "a")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "synthaug.pools", "list", "--cache", str(cache)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(k.pool_id for k in keys)
    assert all("24 images" in line and "ddim 4 steps  cpu/float32  generator " + GENERATOR in line for line in lines)
    assert "class unconditional  seed -1" in done.stdout and "class 1  seed 0" in done.stdout


def test_a_conditional_pool_brings_the_labeller_that_judges_its_generator(tmp_path, capsys):
    cache, keys = make_cache(tmp_path / "a")
    archive, fresh = tmp_path / "cond.tar", tmp_path / "b"
    assert main(["export", keys[0].pool_id, "--to", str(archive), "--cache", str(cache)]) == 0
    assert "exported 1 pool(s) (24 images), 1 generator(s) and 1 labeller(s)" in capsys.readouterr().out
    assert main(["import", str(archive), "--cache", str(fresh)]) == 0
    assert (fresh / "labellers" / "feedbeef" / "labeller.pt").read_bytes() == \
        (cache / "labellers" / "feedbeef" / "labeller.pt").read_bytes()


def test_a_file_outside_the_cache_layout_is_refused_before_anything_is_written(exported, tmp_path, capsys):
    _, _, archive, _ = exported
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in [*members, (tarfile.TarInfo("generators/x/../../../escaped"), b"!")]:
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    capsys.readouterr()
    assert main(["import", str(archive), "--cache", str(tmp_path / "b" / "cache")]) == 2
    assert "generators/x/../../../escaped is not a file an export holds" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "escaped").exists()
