"""Every file the project writes goes through ``atomic_write``: complete, or not there at all; a
downloaded file is kept only once its SHA-256 is checked."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder to write to; when the block succeeds it is renamed
    onto ``path`` (atomic within one filesystem), when it fails it is removed. So ``path`` holds the
    previous complete file or the new complete one, never a partial one, whatever interrupts the write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove what interrupted writers left in ``folder``: ``atomic_write``'s ``.NAME.PID.*.partial``
    files and ``NAME.partial-PID`` folders of processes that no longer run (a SIGKILL, a crash).
    Returns what was removed."""
    removed = []
    for path in list(folder.glob(".*.partial")) + list(folder.glob("*.partial-*")) if folder.is_dir() else []:
        pid = path.name.rsplit("-", 1)[1] if ".partial-" in path.name else path.name.rsplit(".", 3)[-3]
        if not pid.isdigit() or int(pid) == os.getpid() or alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def fingerprint(path: Path, whole_up_to: int = 1 << 28, blocks: int = 64) -> str:
    """A SHA-256 that stands for the file's content: of all of it up to ``whole_up_to`` bytes
    (256 MB: a fraction of a second), beyond that of its size and ``blocks`` evenly spaced 1 MB
    blocks (what changes a large file anywhere but in a few bytes changes them)."""
    size = path.stat().st_size
    if size <= whole_up_to:
        return sha256_of(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as file:
        for k in range(blocks):
            file.seek(k * (size - (1 << 20)) // (blocks - 1))
            digest.update(file.read(1 << 20))
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a SHA-256 as settings write it: 64 hex digits, in either case."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None


def download(url: str, sha256: str, target: Path, url_key: str = "data.init_args.url",
             sha256_key: str = "data.init_args.sha256") -> Path:
    """Fetch ``url`` into ``target`` (atomically), checked against ``sha256``: ``target`` is
    either the verified file or absent. Raises ``ConfigError`` naming the config key
    (``url_key`` or ``sha256_key``) otherwise."""
    with atomic_write(target) as partial:
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as file, urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    file.write(block)
        except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors; a bad URL, ValueError
            raise ConfigError(f"{url_key}: download of {url} failed ({error}); nothing was kept") from error
        if digest.hexdigest() != sha256.lower():
            raise ConfigError(f"{sha256_key}: {url} has SHA-256 {digest.hexdigest()}, expected {sha256}; "
                              f"nothing was kept")
    return target
