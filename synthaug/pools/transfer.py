"""Pools that travel: one file holding pools, their manifests and what made them, checked on import.

    python -m synthaug.pools list [--cache DIR]
    python -m synthaug.pools export POOL... --to FILE [--cache DIR]     # a .tar, or .tar.gz / .tgz
    python -m synthaug.pools import FILE [--cache DIR]

The file is a tar whose paths are the cache's own (pools/<pool_id>/..., generators/<entry>/...,
labellers/<entry>/labeller.pt) beside manifest.json. A pool's manifest is its key (the generator's
weights digest, the sampler and its steps, the class, the labeller's digest, the pool seed, the
numerics), its generator's kind and cache entry, its filter, its image count and a sha256 of every
file. Besides the pools the file carries the generator's cache entry (a DDPM trained here: its
weights folder), the labeller the key names (an unconditional generator's) or, for a conditional
generator, the labeller prepared with it to judge it (pool.json's generator_labeller), and an
unconditional pool's calibration pool (a top_fraction filter's), so a sweep over the importing
cache with the same preset and data reads the pools, trains nothing and generates nothing; a
generator given as a file (--checkpoint, a pretrained or released model) is not in the cache and
travels on its own.

An import checks everything before it writes anything: each file against its sha256, each
manifest against the pool id its key gives and against the pool's pool.json, each shard against the
checksum written with its arrays, the generator's weights digest and the labeller's against the key.
A file that fails is refused in one line (exit 2) and the cache is left as it was. A pool already
in the cache with the same bytes is left alone (and said so); other bytes under the same id are
refused. Each pool, generator and labeller is then written whole (synthaug.core.files), in the
layout a sweep reads: nothing is regenerated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from synthaug.core.files import DamagedFile, atomic_directory, atomic_file, atomic_write, load_checked_arrays
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.pools.store import CALIBRATION_SEED, UNCONDITIONAL, PoolKey, PoolStore

FORMAT = "synthaug-pools 1"        # manifest.json's "format": what an import of this version reads
MANIFEST = "manifest.json"
SHARD_ARRAYS = ("images", "labels", "confidence")
# the cache's layout: synthaug.generation.generator_training writes generators/ and labellers/, a sweep's
# servers pools/ (synthaug.generation.serving)
POOLS, GENERATORS, LABELLERS = "pools", "generators", "labellers"
NO_FILTER = ("none: a pool holds every sample; a sweep's filter (min_confidence, top_fraction) is applied as it "
             "serves them, from the labels and confidences the shards carry")
POOL_ID = re.compile(r"[0-9a-f]{24}")
MEMBER = re.compile(r"(pools/[0-9a-f]{24}/(pool\.json|\d{9}-\d{9}\.npz)|generators/\w[\w.-]*/[\w./-]+"
                    r"|labellers/\w[\w.-]*/labeller\.pt)")


class Refused(ValueError):
    """An export or import that cannot go ahead; the message is one line, and nothing was written."""


@dataclass(frozen=True)
class Entry:
    """A folder of the cache that travels whole: a pool, a generator or a labeller."""

    path: str                   # relative to the cache: generators/<key>, labellers/<key>
    files: dict                 # path relative to the cache -> sha256
    digest: str                 # its weights': what the pools' keys name


# ---------------------------------------------------------------------------- export


def pool_ids(cache: Path) -> list[str]:
    """The ids of the pools in the cache (a folder with a pool.json), in order."""
    folders = (cache / POOLS).glob("*")
    return sorted(f.name for f in folders if POOL_ID.fullmatch(f.name) and (f / "pool.json").is_file())


def list_pools(cache: Path) -> list[str]:
    """A line a pool in the cache: what `export` would say of it, without reading its shards."""
    store = PoolStore(cache / POOLS)
    return [describe(pool_summary(cache, store, pool_id)) for pool_id in pool_ids(cache)]


def resolve(cache: Path, names: Sequence[str]) -> list[str]:
    """Pool ids for ids or unique prefixes of them; Refused names the first that is unknown or ambiguous."""
    known = pool_ids(cache)
    chosen = []
    for name in names:
        found = [p for p in known if p.startswith(name.lower())] if name else []
        if len(found) != 1:
            more = ", ..." if len(found) > 3 else ""
            what = (f"matches {len(found)} pools ({', '.join(found[:3])}{more}); give more of it" if found else
                    f"is no pool in {cache / POOLS} ({len(known)} there; `python -m synthaug.pools list --cache "
                    f"{cache}` names them)")
            raise Refused(f"POOL {name!r} {what}")
        chosen.append(found[0])
    return list(dict.fromkeys(chosen))


def with_calibration(cache: Path, pool_ids: list[str]) -> list[str]:
    """The pools, each unconditional one followed by its calibration pool (the samples a top_fraction filter
    is calibrated on) when the cache holds it: with it, the importing cache serves that filter too."""
    store, chosen = PoolStore(cache / POOLS), []
    for pool_id in pool_ids:
        chosen.append(pool_id)
        try:
            key = key_of(store.manifest(pool_id))
        except (KeyError, TypeError, ValueError):
            continue                        # pool_summary refuses it, naming it
        if key.class_index == UNCONDITIONAL and key.seed != CALIBRATION_SEED:
            calibration = dataclasses.replace(key, seed=CALIBRATION_SEED).pool_id
            if store.length(calibration):
                chosen.append(calibration)
    return list(dict.fromkeys(chosen))


def pool_summary(cache: Path, store: PoolStore, pool_id: str) -> dict:
    """What an export says of a pool but its files: its key, its generator, filter and image count."""
    recorded = store.manifest(pool_id)
    try:
        pool_key = key_of(recorded)
    except (KeyError, TypeError, ValueError):
        raise Refused(f"pool {pool_id}: its pool.json in {store.folder(pool_id)} holds no pool key") from None
    if pool_key.pool_id != pool_id:
        raise Refused(f"pool {pool_id}: its pool.json's key gives pool id {pool_key.pool_id}")
    generator = generator_folder(cache, pool_key.weights_digest)
    return {"pool_id": pool_id, **asdict(pool_key),
            "class": pool_key.class_index if pool_key.class_index != UNCONDITIONAL else "unconditional",
            # generation.generator_training.generator_key: <ddpm-cond|ddpm-uncond>-<16 hex>
            "generator_kind": generator.name.rsplit("-", 1)[0] if generator else "not in this cache (a file given "
                              "with --checkpoint, a pretrained or released model)",
            "generator_entry": str(generator.relative_to(cache)) if generator else "",
            "generator_labeller": str(recorded.get("generator_labeller", "")),
            "filter": NO_FILTER, "images": store.length(pool_id)}


def pool_manifest(cache: Path, store: PoolStore, pool_id: str) -> dict:
    """pool_summary and the sha256 of each of the pool's files (pool.json and its shards, each shard checked
    against the checksum written with its arrays: a damaged one is Refused)."""
    summary = pool_summary(cache, store, pool_id)
    for shard in store.shards(pool_id):
        try:
            load_checked_arrays(shard, SHARD_ARRAYS)
        except DamagedFile as err:
            raise Refused(f"pool {pool_id}: shard {shard} is damaged ({err}); a sweep over this cache generates "
                          f"it again") from None
    files = [store.folder(pool_id) / "pool.json", *store.shards(pool_id)]
    return {**summary, "files": {str(f.relative_to(cache)): sha256(f.read_bytes()) for f in files}}


def generator_folder(cache: Path, weights_digest: str) -> Path | None:
    """The cache's trained generator whose weights.sha256 is `weights_digest` (None: not trained here)."""
    for digest_file in sorted((cache / GENERATORS).glob("*/weights.sha256")):
        if digest_file.read_text().strip() == weights_digest:
            return digest_file.parent
    return None


def labeller_entry(cache: Path, labeller_digest: str) -> Entry | None:
    """The cache's labeller whose weights digest is `labeller_digest` (None: none is)."""
    from synthaug.models.labeller import checked_labeller

    for path in sorted((cache / LABELLERS).glob("*/labeller.pt")):
        try:
            if checked_labeller(path)["digest"] == labeller_digest:
                files = {str(path.relative_to(cache)): sha256(path.read_bytes())}
                return Entry(str(path.parent.relative_to(cache)), files, labeller_digest)
        except DamagedFile:
            continue
    return None


def generator_entry(cache: Path, folder: Path) -> Entry:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.endswith(".lock"))
    return Entry(str(folder.relative_to(cache)), {str(f.relative_to(cache)): sha256(f.read_bytes()) for f in files},
                 (folder / "weights.sha256").read_text().strip())


def export_pools(cache: Path, names: Sequence[str], to: Path) -> str:
    """Write the named pools, their generator's cache entry and labeller to `to` (atomically); one line
    saying what it holds. Refused (nothing written) for an unknown pool or a damaged one."""
    store = PoolStore(cache / POOLS)
    pools = [pool_manifest(cache, store, pool_id) for pool_id in with_calibration(cache, resolve(cache, names))]
    generators = {p["generator_entry"]: generator_entry(cache, cache / p["generator_entry"]) for p in pools
                  if p["generator_entry"]}
    labellers = {}
    for p in pools:
        if p["labeller_digest"] and p["labeller_digest"] not in labellers:
            entry = labeller_entry(cache, p["labeller_digest"])
            if entry is None:
                raise Refused(f"pool {p['pool_id']}: no labeller in {cache / LABELLERS} has its digest "
                              f"{p['labeller_digest'][:16]}")
            labellers[p["labeller_digest"]] = entry
    for p in pools:     # a conditional generator's judge: carried when the cache still holds it
        judge = p["generator_labeller"]
        if judge and judge not in labellers and (entry := labeller_entry(cache, judge)) is not None:
            labellers[judge] = entry
    manifest = {"format": FORMAT, "pools": pools,
                "generators": [asdict(e) for e in generators.values()],
                "labellers": [asdict(e) for e in labellers.values()]}
    compressed = to.name.endswith((".gz", ".tgz"))
    with atomic_file(to) as out, tarfile.open(fileobj=out, mode="w:gz" if compressed else "w") as tar:
        _add(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
        for part in [*pools, *manifest["generators"], *manifest["labellers"]]:
            for name, digest in part["files"].items():
                data = (cache / name).read_bytes()
                if sha256(data) != digest:          # a sweep extended the pool meanwhile (its pool.json)
                    raise Refused(f"{cache / name} changed while it was exported; nothing written, export again")
                _add(tar, name, data)
    images = sum(p["images"] for p in pools)
    return (f"exported {len(pools)} pool(s) ({images} images), {len(manifest['generators'])} generator(s) and "
            f"{len(manifest['labellers'])} labeller(s) to {to} ({to.stat().st_size / 1e6:.1f} MB)")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------- import


def import_pools(archive: Path, cache: Path) -> list[str]:
    """Check `archive` whole, then write what the cache lacks; a line for each pool, generator and labeller.
    Refused (one line, nothing written) when a file, a manifest or what the cache holds does not match."""
    manifest, contents = read_archive(archive)
    pools = [check_pool(p, contents) for p in manifest["pools"]]
    generators = [check_entry(g, GENERATORS, "weights.sha256", contents) for g in manifest["generators"]]
    labellers = [check_entry(lab, LABELLERS, "labeller.pt", contents) for lab in manifest["labellers"]]
    named = {p.get(field) for p in pools for field in ("weights_digest", "labeller_digest", "generator_labeller")}
    for entry in [*generators, *labellers]:
        if entry.digest not in named:
            raise Refused(f"{archive}: {entry.path} is named by none of its pools")
    todo = [(f"pool {p['pool_id']} ({p['images']} images, class {p.get('class')}, seed {p.get('seed')})",
             Entry(f"{POOLS}/{p['pool_id']}", p["files"], p["pool_id"]), pool_present(cache, p, contents))
            for p in pools]
    todo += [(f"generator {g.path}", g, generator_present(cache, g)) for g in generators]
    todo += [(f"labeller {lab.path}", lab, labeller_present(cache, lab)) for lab in labellers]
    lines = []
    for what, entry, present in todo:       # every check passed: now, and only now, the cache is written
        if present:
            lines.append(f"{what}: already in {cache / entry.path}, the same; left as it is")
            continue
        if entry.path.startswith(LABELLERS):    # its folder may hold a checkpoint of a training under way
            for name in entry.files:
                atomic_write(cache / name, contents[name])
        else:
            with atomic_directory(cache / entry.path) as tmp:
                for name in entry.files:
                    target = tmp / Path(name).relative_to(entry.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(contents[name])
        lines.append(f"{what}: imported into {cache / entry.path}")
    return lines


def read_archive(archive: Path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, path -> bytes) of an export, every file checked against the manifest's sha256."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            contents = {}
            for member in tar:
                allowed = member.name == MANIFEST or (MEMBER.fullmatch(member.name) and ".." not in member.name)
                if not member.isfile() or not allowed:
                    raise Refused(f"{archive}: {member.name} is not a file an export holds")
                contents[member.name] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as err:
        raise Refused(f"{archive}: not a readable export ({' '.join(str(err).split())[:160]})") from None
    try:
        manifest = json.loads(contents.pop(MANIFEST))
        fmt = manifest.get("format")
        parts = [*manifest["pools"], *manifest["generators"], *manifest["labellers"]]
        listed = {name: digest for part in parts for name, digest in part["files"].items()}
    except (KeyError, TypeError, AttributeError, ValueError):
        raise Refused(f"{archive}: its {MANIFEST} is missing or not a manifest of pools") from None
    if fmt != FORMAT:
        raise Refused(f"{archive}: its manifest's format is {fmt!r}; this version reads {FORMAT!r}")
    if sum(len(part["files"]) for part in parts) != len(listed):
        raise Refused(f"{archive}: its {MANIFEST} lists a file twice")
    for name in sorted({*listed, *contents}):
        if name not in contents:
            raise Refused(f"{archive}: {name} is in the manifest, not in the file")
        if name not in listed:
            raise Refused(f"{archive}: {name} is in the file, not in the manifest")
        if sha256(contents[name]) != listed[name]:
            raise Refused(f"{archive}: {name} does not match its sha256 in the manifest")
    return manifest, contents


def check_pool(pool: dict, contents: dict[str, bytes]) -> dict:
    """The pool's manifest, once its key gives its pool id, its pool.json holds that key and its shards
    hold `images` images end to end, each matching the checksum written with its arrays."""
    pool_id = pool.get("pool_id", "?")
    try:
        key = key_of(pool)
    except (KeyError, TypeError, ValueError):
        raise Refused(f"pool {pool_id}: its manifest holds no pool key") from None
    if key.pool_id != pool_id:
        raise Refused(f"pool {pool_id}: its manifest's key (weights {key.weights_digest[:12]}, class "
                      f"{key.class_index}, seed {key.seed}, {key.numerics}) gives pool id {key.pool_id}")
    folder = f"{POOLS}/{pool_id}"
    if any(not name.startswith(folder + "/") for name in pool["files"]):
        raise Refused(f"pool {pool_id}: its manifest lists files outside {folder}/")
    try:
        stored = key_of(json.loads(contents[f"{folder}/pool.json"]))
    except (KeyError, TypeError, ValueError):
        raise Refused(f"pool {pool_id}: its pool.json is missing or holds no pool key") from None
    recorded = json.loads(contents[f"{folder}/pool.json"]).get("generator_labeller", "")
    if stored != key or recorded != pool.get("generator_labeller", ""):
        differ = [f for f in asdict(key) if asdict(key)[f] != asdict(stored)[f]] or ["generator_labeller"]
        raise Refused(f"pool {pool_id}: its pool.json and its manifest differ in {', '.join(differ)}")
    end = 0
    for name in sorted(n for n in pool["files"] if n.endswith(".npz")):
        start, stop = (int(v) for v in Path(name).stem.split("-"))
        try:
            arrays = load_checked_arrays(io.BytesIO(contents[name]), SHARD_ARRAYS)[0]
        except DamagedFile as err:
            raise Refused(f"pool {pool_id}: shard {name} is damaged ({err})") from None
        if start != end or len(arrays["images"]) != stop - start:
            raise Refused(f"pool {pool_id}: shard {name} does not continue its pool at image {end}")
        end = stop
    if end != pool.get("images"):
        raise Refused(f"pool {pool_id}: its shards hold {end} images, its manifest says {pool.get('images')}")
    return pool


def check_entry(fields: dict, root: str, weights_file: str, contents: dict[str, bytes]) -> Entry:
    """A generator's or a labeller's entry, once its files lie in its folder and its weights are the digest
    it claims (a generator's weights.sha256, written from its weights; a labeller's weights, recomputed)."""
    try:
        entry = Entry(str(fields["path"]), dict(fields["files"]), str(fields["digest"]))
    except (KeyError, TypeError, ValueError):
        raise Refused(f"a {root[:-1]} entry of the manifest names no path, files and digest") from None
    outside = [n for n in entry.files if not n.startswith(entry.path + "/")]
    if not re.fullmatch(rf"{root}/\w[\w.-]*", entry.path) or outside:
        raise Refused(f"{root[:-1]} {entry.path}: its manifest lists files outside {root}/<entry>/")
    weights = contents.get(f"{entry.path}/{weights_file}")
    found = "missing"
    if weights is not None and root == GENERATORS:
        found = weights.decode(errors="replace").strip()
    elif weights is not None:
        from synthaug.models.labeller import checked_labeller
        try:
            found = checked_labeller(io.BytesIO(weights))["digest"]
        except Exception:           # DamagedFile, or what torch.load raises on bytes that are no checkpoint
            found = "unreadable"
    if found != entry.digest:
        raise Refused(f"{root[:-1]} {entry.path}: its weights ({found[:16]}) are not the ones its manifest names "
                      f"({entry.digest[:16]})")
    return entry


def pool_present(cache: Path, pool: dict, contents: dict[str, bytes]) -> bool:
    """True when the cache holds the pool's every file with the same bytes, False when it holds none of its
    shards; Refused when it holds other images under that pool id."""
    folder = cache / POOLS / pool["pool_id"]
    if not any(folder.glob("*.npz")):
        return False
    if all((cache / name).is_file() and (cache / name).read_bytes() == contents[name] for name in pool["files"]):
        return True
    raise Refused(f"pool {pool['pool_id']}: {folder} holds other images under that pool id "
                  f"({PoolStore(cache / POOLS).length(pool['pool_id'])} on disk); nothing imported")


def generator_present(cache: Path, entry: Entry) -> bool:
    """True when the cache holds the generator with the same weights digest; Refused for other weights."""
    digest_file = cache / entry.path / "weights.sha256"
    found = digest_file.read_text().strip() if digest_file.is_file() else None
    return _same_weights("generator", entry, cache / entry.path, found)


def labeller_present(cache: Path, entry: Entry) -> bool:
    """True when the cache holds the labeller with the same weights digest; Refused for other weights."""
    from synthaug.models.labeller import checked_labeller

    path = cache / entry.path / "labeller.pt"
    found = None
    if path.is_file():
        try:
            found = checked_labeller(path)["digest"]
        except DamagedFile:
            found = "damaged"
    return _same_weights("labeller", entry, path, found)


def _same_weights(kind: str, entry: Entry, where: Path, found: str | None) -> bool:
    """False when the cache has no such entry (found None), True when its digest is the entry's; else Refused."""
    if found is None:
        return False
    if found == entry.digest:
        return True
    raise Refused(f"{kind} {entry.path}: {where} holds other weights ({found[:16]}); nothing imported")


# ---------------------------------------------------------------------------- shared


def key_of(fields: dict) -> PoolKey:
    """The PoolKey a manifest or pool.json names (KeyError, TypeError or ValueError when it names none)."""
    sampler = SamplerConfig(**fields["sampler"])
    return PoolKey(str(fields["weights_digest"]), sampler, int(fields["class_index"]), str(fields["labeller_digest"]),
                   int(fields["seed"]), str(fields["numerics"]))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(pool: dict) -> str:
    """A pool in one line, for `list`."""
    sampler = pool["sampler"]
    return (f"{pool['pool_id']}  {pool['images']:>7} images  class {pool['class']}  seed {pool['seed']}  "
            f"{sampler['name']} {sampler['steps']} steps  {pool['numerics']}  generator "
            f"{pool['generator_entry'] or pool['weights_digest'][:16] + ' (not in this cache)'}")
