"""Lock manifests: the SHA-256 of every file of a test set and one digest over them.

The digest is the SHA-256 of the canonical JSON (sorted keys, no whitespace,
UTF-8) of ``{relpath: sha256}``; the same canonical form the audit trail uses,
so a locked test set is identified by one hash that anyone can recompute with
``sha256sum`` and a JSON library.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.dicom._walk import sha256_file, walk_files
from workbench.dicom.index import DicomIndex
from workbench.errors import ManifestError

__all__ = ["Manifest", "ManifestDiff", "build_manifest", "canonical_json", "verify_manifest"]

Progress = Callable[[int, int, str], None]

MANIFEST_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (non-ASCII kept)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _check_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(
            f"Manifest paths must be relative POSIX paths without '.' or '..', found {path!r}."
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """The locked content of a test set.

    Parameters
    ----------
    entries : Mapping[str, str]
        ``{relative POSIX path: SHA-256 hex}`` of every file.
    digest : str
        SHA-256 of :func:`canonical_json` of ``entries``.
    """

    entries: Mapping[str, str]
    digest: str

    @classmethod
    def from_entries(cls, entries: Mapping[str, str]) -> Manifest:
        """Build a manifest from ``{path: sha256}``, validating paths and hashes."""
        clean = {}
        for path, digest in sorted(entries.items()):
            _check_path(path)
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise ManifestError(
                    f"{path}: expected a lowercase 64-digit SHA-256, found {digest!r}."
                )
            clean[path] = digest
        return cls(entries=clean, digest=hashlib.sha256(canonical_json(clean)).hexdigest())

    @property
    def n_files(self) -> int:
        """Number of files in the manifest."""
        return len(self.entries)

    def to_json(self) -> str:
        """Canonical JSON text ``{"digest", "entries", "version"}``."""
        payload = {
            "digest": self.digest,
            "entries": dict(self.entries),
            "version": MANIFEST_VERSION,
        }
        return canonical_json(payload).decode("utf-8")

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse :meth:`to_json` output and check that the digest matches the entries.

        Raises
        ------
        ManifestError
            Malformed JSON, unknown version, invalid entries, or a digest that
            does not match the entries (the manifest was altered).
        """
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"Manifest is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or not {"digest", "entries"} <= payload.keys():
            raise ManifestError("Expected a manifest object with 'digest' and 'entries'.")
        version = payload.get("version", MANIFEST_VERSION)
        if version != MANIFEST_VERSION:
            raise ManifestError(f"Expected manifest version {MANIFEST_VERSION}, found {version!r}.")
        if not isinstance(payload["entries"], dict):
            raise ManifestError("Expected 'entries' to be an object of {path: sha256}.")
        manifest = cls.from_entries(payload["entries"])
        if manifest.digest != payload["digest"]:
            raise ManifestError(
                f"Manifest digest {payload['digest']} does not match its entries "
                f"(recomputed {manifest.digest}); the manifest was altered."
            )
        return manifest


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """Differences between a manifest and the files on disk.

    Parameters
    ----------
    added : tuple of str
        Files on disk that the manifest does not list.
    removed : tuple of str
        Files the manifest lists that are gone.
    changed : tuple of str
        Files whose SHA-256 differs.
    skipped : tuple of (str, str)
        Links and special files not followed, with the reason (informational).
    n_checked : int
        Files hashed.
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = field(default=())
    n_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was added, removed or changed."""
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        """One line for people: counts and the first few paths of each kind."""
        if self.ok:
            return f"All {self.n_checked} files match the manifest."
        parts = []
        for name, paths in (
            ("changed", self.changed),
            ("removed", self.removed),
            ("added", self.added),
        ):
            if paths:
                shown = ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "")
                parts.append(f"{len(paths)} {name} ({shown})")
        return "Test set differs from its manifest: " + "; ".join(parts) + "."


def build_manifest(root: str | Path, index: DicomIndex) -> Manifest:
    """Build the lock manifest of ``root`` from its index (no re-hashing).

    Parameters
    ----------
    root : str or Path
        The indexed folder (must be the index's root).
    index : DicomIndex
        From :func:`~workbench.dicom.index.index_folder`; DICOM files, unreadable
        files and other reference files are all covered.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        The index belongs to another folder, or some file could not be hashed.
    """
    if Path(root).resolve() != Path(index.root).resolve():
        raise ManifestError(f"Index was built for {index.root}, not for {root}.")
    unhashed = [
        str(p)
        for p, h in zip(index.unreadable["path"], index.unreadable["sha256"], strict=True)
        if not isinstance(h, str) or not h
    ]
    if unhashed:
        raise ManifestError(
            f"{len(unhashed)} file(s) could not be read and hashed, e.g. {unhashed[0]}; "
            "fix permissions and index again."
        )
    entries = index.hashes
    if not entries:
        raise ManifestError(f"Expected files under {root}, found none.")
    return Manifest.from_entries(entries)


def verify_manifest(
    root: str | Path,
    manifest: Manifest,
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> ManifestDiff:
    """Re-hash every file under ``root`` and compare with ``manifest``.

    Parameters
    ----------
    root : str or Path
        The test-set folder.
    manifest : Manifest
        The locked manifest.
    workers : int
        Hashing threads (hashlib and file reads release the GIL).
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    ManifestDiff
        Added, removed and changed paths; ``.ok`` when identical.

    Raises
    ------
    ManifestError
        ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise ManifestError(f"Expected the test-set folder {base}, found no such folder.")
    on_disk, skipped = walk_files(base)
    disk_set = set(on_disk)
    listed = set(manifest.entries)
    to_check = sorted(disk_set & listed)
    changed: list[str] = []
    total = len(to_check)

    def check(rel: str) -> tuple[str, bool]:
        try:
            _, digest = sha256_file(base / rel)
        except OSError:
            return rel, False
        return rel, digest == manifest.entries[rel]

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rel, same in pool.map(check, to_check, chunksize=64):
            if not same:
                changed.append(rel)
            done += 1
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total, "verifying")
    return ManifestDiff(
        added=tuple(sorted(disk_set - listed)),
        removed=tuple(sorted(listed - disk_set)),
        changed=tuple(sorted(changed)),
        skipped=tuple(skipped),
        n_checked=total,
    )
