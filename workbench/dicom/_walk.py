"""Walk a test-set folder with the symlink rules shared by indexing and verification.

Symbolic links are followed only while their target stays inside the root
(resolved with ``os.path.realpath``, so ``..`` in a target never leads out);
links that leave the root, broken links, loops and special files are listed
as skipped with the reason. Paths are relative POSIX paths as seen from the
root, in sorted order.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def _inside(target: str, real_root: str) -> bool:
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)


def walk_files(root: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """List the regular files under ``root``.

    Returns
    -------
    files : list of str
        Relative POSIX paths of regular files (possibly reached through links
        that stay inside the root), sorted.
    skipped : list of (str, str)
        ``(path, reason)`` for links leaving the root, broken links, link loops
        and entries that are not regular files.
    """
    real_root = os.path.realpath(root)
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    visited = {real_root}
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append((prefix.rstrip("/") or ".", f"cannot list folder: {exc.strerror}"))
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not os.path.exists(target):
                    skipped.append((rel, "broken symbolic link"))
                    continue
                if not _inside(target, real_root):
                    skipped.append((rel, "symbolic link leaves the test-set root; not followed"))
                    continue
                if os.path.isdir(target):
                    if target in visited or _inside(real_root, target):
                        skipped.append((rel, "symbolic link loop; not followed"))
                        continue
                    visited.add(target)
                    subdirs.append((entry.path, rel + "/"))
                elif os.path.isfile(target):
                    files.append(rel)
                else:
                    skipped.append((rel, "symbolic link to a special file"))
            elif entry.is_dir(follow_symlinks=False):
                real = os.path.realpath(entry.path)
                if real in visited:
                    continue
                visited.add(real)
                subdirs.append((entry.path, rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                files.append(rel)
            else:
                skipped.append((rel, "not a regular file (device, FIFO or socket)"))
        stack.extend(reversed(subdirs))
    files.sort()
    skipped.sort()
    return files, skipped


def sha256_file(path: str | Path) -> tuple[int, str]:
    """Size and SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def chunked(items: list[str], n_chunks: int, *, min_size: int = 16) -> list[list[str]]:
    """Split ``items`` into about ``n_chunks`` contiguous chunks of at least ``min_size``."""
    if not items:
        return []
    size = max(min_size, -(-len(items) // max(n_chunks, 1)))
    return [items[i : i + size] for i in range(0, len(items), size)]
