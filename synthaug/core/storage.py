"""Can this location be written? Found out by writing, never from permission bits or the look of a URI.

    folder_problem(folder)      a folder a command will write (--cache, a local --storage, a SQLite
                                tracking file's folder): a probe file is created and removed in the
                                nearest folder of its path that exists. Permission bits cannot tell: as
                                root, os.access says yes to a read-only mount, /proc and /sys. Nothing
                                else is created (the folder itself is not made).
    object_store_problem(uri)   an s3:// or gs:// (any pyarrow file system) --storage URI: a small object
                                is written under it through pyarrow.fs, what Tune writes with, read back
                                and deleted, within OBJECT_PROBE_S whatever the store does (the client's
                                timeouts and retries bounded, the probe on a thread with a deadline). A
                                missing bucket is never created.
    storage_problem(location)   --storage's scheme, and a folder's writability (not the URI's: probed
                                later, in the preflight, so that --dry-run stays offline).

The *_problem functions return the one-line problem after the flag ('--storage ...'), or None.
Imports nothing of synthaug.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

DEFAULT_CACHE = ".synthaug"     # --cache: decoded data, generators, labellers and pools
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az")   # pyarrow file systems Tune takes
PROBE_PREFIX = ".synthaug-probe-"
PROBE_BYTES = b"synthaug storage probe\n"
OBJECT_PROBE_S = 20.0           # the whole object-store probe; a CLI refusal stays well within 30 s
REQUEST_TIMEOUT_S = 5.0         # one S3 request (connect, then no byte for this long) ...
REQUEST_ATTEMPTS = 2            # ... tried this often: one step gives up within about 10 s


def is_uri(location: str) -> bool:
    return scheme_of(location) in STORAGE_SCHEMES


def storage_problem(location: str) -> str | None:
    """A --storage value: a folder (made absolute) that can be written, or a URI of a file system Tune knows."""
    if "://" in location and not is_uri(location):
        return (f"{location!r}: an unknown scheme {scheme_of(location)!r}; a folder every node sees, or a URI "
                f"({', '.join(s + '://' for s in STORAGE_SCHEMES)})")
    return None if is_uri(location) else folder_problem(Path(os.path.abspath(location)))


def folder_problem(folder: Path) -> str | None:
    """Why a folder the command will write cannot be made or written, or None."""
    reason = unwritable(folder)
    return f"{str(folder)!r}: {reason}; pass a folder this user can create and write" if reason else None


def unwritable(folder: Path) -> str | None:
    """Why `folder` cannot be made or written, in a few words, or None: the nearest part of its path that
    exists must be a folder in which a file can be created (it is removed again)."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{existing} is a file, not a folder"
    reason = _write_problem(existing)
    return f"{existing} cannot be written ({reason})" if reason else None


def _write_problem(folder: Path) -> str | None:
    """Create and remove a probe file in `folder`; the reason it failed, or None."""
    probe = folder / f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        return err.strerror or str(err)
    try:
        os.write(fd, PROBE_BYTES)
    except OSError as err:                  # a pseudo file system may take the name and refuse the bytes
        return err.strerror or str(err)
    finally:
        os.close(fd)
        try:
            probe.unlink()
        except OSError:
            pass
    return None


def object_store_problem(uri: str, limit_s: float = OBJECT_PROBE_S) -> str | None:
    """Write, read back and delete a small object under `uri` through pyarrow.fs, within limit_s.
    With S3, pyarrow re-creates the parent's empty 'folder' object (<path>/) when it deletes the probe, as
    Tune's own create_dir makes it: that marker of the storage folder itself is all that may remain."""
    outcome: dict = {}

    def probe() -> None:
        try:
            _probe_object(uri, outcome)
        except BaseException as err:    # noqa: BLE001 - reported below, whatever the file system raised
            outcome["error"] = err

    worker = threading.Thread(target=probe, name="synthaug-storage-probe", daemon=True)
    worker.start()
    worker.join(limit_s)
    if worker.is_alive():
        return (f"{uri!r}: the store did not answer within {limit_s:g} s ({outcome.get('stage', 'connecting')}); "
                f"check the network, the endpoint{_endpoint_hint(uri)} and the credentials")
    error = outcome.get("error")
    return None if error is None else _explain(uri, outcome.get("stage", "connecting to"), error)


def _probe_object(uri: str, outcome: dict) -> None:
    import pyarrow.fs as pafs

    outcome["stage"] = "connecting to"
    filesystem, path = pafs.FileSystem.from_uri(uri)
    filesystem = _bounded(filesystem)
    key = f"{path.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    outcome["stage"] = "writing"
    with filesystem.open_output_stream(key) as out:
        out.write(PROBE_BYTES)
    try:
        outcome["stage"] = "reading back"
        with filesystem.open_input_stream(key) as stream:
            if stream.read() != PROBE_BYTES:
                raise OSError("what was read back differs from what was written")
    except BaseException:
        try:
            filesystem.delete_file(key)
        except Exception:           # noqa: BLE001 - the read's error is the one to report
            pass
        raise
    outcome["stage"] = "deleting"
    filesystem.delete_file(key)


def _bounded(filesystem):
    """The same file system (region, endpoint, credentials as from_uri resolved them, as Tune's) with the
    client's timeouts and retries bounded: on Linux the AWS SDK otherwise waits about 100 s for a store
    that accepts and never answers, and the interpreter waits for it again at exit."""
    import datetime

    import pyarrow.fs as pafs

    rebuild, args = filesystem.__reduce__()
    if isinstance(filesystem, pafs.S3FileSystem):
        options = {**args[0], "connect_timeout": REQUEST_TIMEOUT_S, "request_timeout": REQUEST_TIMEOUT_S,
                   "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=REQUEST_ATTEMPTS)}
        return rebuild(options)
    if type(filesystem).__name__ == "GcsFileSystem" and isinstance(args[0], dict):
        return rebuild({**args[0], "retry_time_limit": datetime.timedelta(seconds=REQUEST_TIMEOUT_S)})
    return filesystem


# what the AWS SDK (through pyarrow) and Google's client say, and what it means
MISSING_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "The specified bucket does not exist", "bucket does not exist")
BAD_CREDENTIALS = ("SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch", "INVALID_ACCESS_KEY_ID",
                   "InvalidAccessKeyId", "EXPIRED_TOKEN", "ExpiredToken", "InvalidToken", "UNAUTHENTICATED",
                   "No credentials", "Unable to locate credentials", "invalid_grant", "401")
DENIED = ("ACCESS_DENIED", "AccessDenied", "Forbidden", "PERMISSION_DENIED", "403")
NO_ANSWER = ("NETWORK_CONNECTION", "curlCode", "Could not resolve host", "Couldn't connect", "Connection refused",
             "Timeout was reached", "UNAVAILABLE", "DEADLINE_EXCEEDED")


def _explain(uri: str, stage: str, error: BaseException) -> str:
    text = " ".join(str(error).split())
    code = re.search(r"AWS Error (\w+)", text)          # the AWS SDK's error name says it best
    detail = code.group(1) if code else text[:200] + ("..." if len(text) > 200 else "")
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    s3 = scheme_of(uri) == "s3"
    if any(m in text for m in MISSING_BUCKET) or (stage == "writing" and f"Bucket '{bucket}' not found" in text):
        return (f"{uri!r}: the bucket {bucket!r} does not exist{_endpoint_hint(uri)}; create it first"
                f"{f' (aws s3 mb s3://{bucket})' if s3 else ''}, a sweep never creates one, or pass a bucket "
                f"that exists")
    if any(m in text for m in BAD_CREDENTIALS):
        what = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key it accepts" if s3 else
                "set GOOGLE_APPLICATION_CREDENTIALS (or the store's own credentials) to ones it accepts")
        return f"{uri!r}: the store refused these credentials when {stage} a test object ({detail}); {what}"
    if any(m in text for m in DENIED):
        need = " (s3:PutObject, s3:GetObject, s3:DeleteObject)" if s3 else ""
        return (f"{uri!r}: access denied when {stage} a test object; these credentials must write, read and "
                f"delete objects under it{need}, or pass a location they may write")
    if any(m in text for m in NO_ANSWER):
        return (f"{uri!r}: the store did not answer when {stage} a test object ({detail}); check the network, "
                f"the endpoint{_endpoint_hint(uri)} and the region")
    return f"{uri!r}: a test object could not be written, read back and deleted ({stage}: {detail})"


def _endpoint_hint(uri: str) -> str:
    if scheme_of(uri) != "s3":
        return ""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return f" (AWS_ENDPOINT_URL={endpoint})" if endpoint else " (AWS_ENDPOINT_URL, AWS_REGION)"


def scheme_of(uri: str) -> str:
    """A URI's scheme, lower case, without a driver suffix (sqlite+pysqlite -> sqlite); "" for a path."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
