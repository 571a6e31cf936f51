"""Model registry use cases: register a candidate model and re-verify its files.

Registration checks the spec's name and version (:func:`workbench.naming.check_name`),
copies the model file (TorchScript, ONNX) or bundle folder into a staging folder
inside the workdir's ``models/``, test-loads the staged copy on a dummy input of
the declared shape (:func:`~workbench.inference.loading.check_model_runs`), and
only then moves it to ``models/<name>/<version>/``, records the SHA-256 of every
file and the model's digest (in its row and in the ``model.register`` audit
entry), and stores its specification and card. A model that does not load or
whose outputs do not fit its spec is refused, the refusal is audited and nothing
is kept. Nothing outside ``models/`` is ever deleted. Before every run the files
are hashed again and compared with the audited hashes
(:func:`registered_files`); a change is refused
(:class:`~workbench.errors.ModelIntegrityError`).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from workbench.errors import ConfigurationError, DuplicateError, ModelError
from workbench.inference.registry import (
    ModelSpec,
    hash_model_files,
    model_digest,
    verify_model_files,
)
from workbench.naming import InvalidNameError, check_name, resolve_inside
from workbench.records import audit
from workbench.records.models import RegisteredModel
from workbench.services.context import Actor, Workbench, current_user, get_one

__all__ = [
    "ModelInfo",
    "register_model",
    "list_models",
    "get_model",
    "verify_model",
    "registered_files",
    "parse_ref",
]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A registered model as listed to users.

    Parameters
    ----------
    name, version, task, format, digest, storage_path, registered_by, created_at : str
    intended_use : str
    files : dict
        ``{relative path: sha256}``.
    spec : dict
        The :class:`~workbench.inference.registry.ModelSpec` as JSON data.
    card : dict
        Model card (training data, known limitations).
    """

    name: str
    version: str
    task: str
    format: str
    digest: str
    storage_path: str
    registered_by: str
    created_at: str
    intended_use: str
    files: dict[str, Any]
    spec: dict[str, Any]
    card: dict[str, Any]

    @property
    def ref(self) -> str:
        """``name@version``, the way commands name a model."""
        return f"{self.name}@{self.version}"


def _info(model: RegisteredModel) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        version=model.version,
        task=model.task,
        format=model.format,
        digest=model.digest,
        storage_path=model.storage_path,
        registered_by=model.registered_by,
        created_at=model.created_at.isoformat(),
        intended_use=model.intended_use or "",
        files=dict(model.files or {}),
        spec=dict(model.spec or {}),
        card=dict(model.card or {}),
    )


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name@version`` (version optional: the newest is used)."""
    name, _, version = ref.partition("@")
    return name, (version or None)


def _safe_ref(spec: ModelSpec) -> str:
    """``name@version`` for the audit trail; unsafe names are shown escaped."""
    ref = f"{spec.name}@{spec.version}"
    return ref if ref.isprintable() and ref.isascii() else ascii(ref)


def _refuse(wb: Workbench, actor: Actor, spec: ModelSpec, source: Path, reason: str) -> None:
    with wb.transaction() as session:
        audit.append(
            session,
            actor=actor.username,
            action="model.refused",
            record_type="model",
            record_id=_safe_ref(spec),
            new={"refused": reason, "source": ascii(str(source))[1:-1]},
        )


def _clash(session: Any, spec: ModelSpec) -> None:
    clash = session.scalars(
        select(RegisteredModel).where(
            RegisteredModel.name == spec.name, RegisteredModel.version == spec.version
        )
    ).first()
    if clash is not None:
        raise DuplicateError(
            f"Model {spec.name}@{spec.version} is already registered (digest "
            f"{clash.digest[:12]}); register a new version instead."
        )


def _target_folder(models_dir: Path, spec: ModelSpec) -> Path:
    """``models/<name>/<version>``, checked: safe names, no symbolic link on the way."""
    name = check_name(spec.name, what="model name")
    version = check_name(spec.version, what="model version")
    target = resolve_inside(models_dir, name, version, what="model name@version")
    base = models_dir.resolve()
    for link in (base / name, base / name / version):
        if link.is_symlink():
            raise ConfigurationError(
                f"Expected a plain folder at {link} for model {name}@{version}. Found a "
                "symbolic link; remove it and register again."
            )
    return target


def _stage(source: Path, staging: Path) -> Path:
    """Copy the model into ``staging``; return the staged file or folder."""
    if source.is_dir():
        links = sorted(
            p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_symlink()
        )
        if links:
            raise ModelError(
                f"Expected plain files in the bundle folder {source}. Found symbolic links: "
                f"{', '.join(links[:5])}. Replace them by the files they point to."
            )
        shutil.copytree(source, staging, symlinks=False)
        return staging
    staging.mkdir(parents=True)
    stored = staging / source.name
    shutil.copy2(source, stored)
    return stored


def register_model(
    wb: Workbench,
    actor: Actor,
    path: str | Path,
    spec: ModelSpec,
    *,
    card: dict[str, Any] | None = None,
    check_timeout_s: float = 300.0,
) -> ModelInfo:
    """Register a model file or bundle folder under ``spec.name@spec.version``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``model.register``.
    path : str or Path
        TorchScript file, ONNX file or MONAI bundle folder.
    spec : ModelSpec
        Task, input specification and intended use.
    card : dict, optional
        Model card: training data, known limitations.
    check_timeout_s : float
        Time limit of the test-load's forward pass.

    Returns
    -------
    ModelInfo

    Raises
    ------
    DuplicateError
        ``name@version`` is already registered (register a new version instead).
    InvalidNameError
        The spec's name or version is not a safe folder name (``../keys``, ``/etc``,
        a newline, a right-to-left override...); audited as ``model.refused``.
    ModelError
        The path does not exist, or the model does not load or does not fit its
        spec on a dummy input (the message names expected and found); audited as
        ``model.refused``. Nothing is stored.
    """
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise ModelError(f"Model path {source} does not exist.")
    models_dir = wb.workdir.models_dir
    with wb.transaction() as session:
        current_user(session, actor, "model.register")
        _clash(session, spec)
    try:
        target = _target_folder(models_dir, spec)
    except (InvalidNameError, ConfigurationError) as error:
        _refuse(wb, actor, spec, source, str(error))
        raise
    from workbench.inference.loading import check_model_runs, load_model

    incoming = models_dir.resolve() / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    staging = incoming / uuid.uuid4().hex
    stored = staging
    try:
        try:
            stored = _stage(source, staging)
            check = check_model_runs(load_model(stored, spec, "cpu"), timeout_s=check_timeout_s)
        except ModelError as error:
            # Name the user's file, not the staging copy the message was written about.
            message = str(error)
            if staging.is_dir():
                message = message.replace(str(stored), str(source)).replace(
                    str(staging), str(source if source.is_dir() else source.parent)
                )
            reason = f"{spec.name}@{spec.version} was not registered: {message}"
            _refuse(wb, actor, spec, source, reason)
            raise ModelError(reason) from error
        hashes = hash_model_files(stored)
        digest = model_digest(hashes)
        with wb.transaction() as session:
            current_user(session, actor, "model.register")
            _clash(session, spec)
            if target.exists():
                # Leftovers of a registration that did not commit; the path was checked
                # to lie inside models/ with no symbolic link on the way.
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.replace(target)
            final = target / stored.relative_to(staging) if stored != staging else target
            model = RegisteredModel(
                name=spec.name,
                version=spec.version,
                task=str(spec.task),
                format=str(spec.format),
                spec=spec.model_dump(mode="json"),
                files=hashes,
                digest=digest,
                storage_path=str(final),
                registered_by=actor.username,
                intended_use=spec.intended_use,
                card=card or {},
            )
            session.add(model)
            session.flush()
            audit.append(
                session,
                actor=actor.username,
                action="model.register",
                record_type="model",
                record_id=f"{spec.name}@{spec.version}",
                new={
                    "digest": digest,
                    "files": hashes,
                    "task": str(spec.task),
                    "format": str(spec.format),
                    "test_load": check.to_dict(),
                },
            )
            return _info(model)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _lookup(session: Any, ref: str) -> RegisteredModel:
    name, version = parse_ref(ref)
    if version is None:
        found = session.scalars(
            select(RegisteredModel)
            .where(RegisteredModel.name == name)
            .order_by(RegisteredModel.id.desc())
        ).first()
        if found is None:
            raise get_one(session, RegisteredModel, "model", name=name)
        return found
    model: RegisteredModel = get_one(session, RegisteredModel, "model", name=name, version=version)
    return model


def get_model(wb: Workbench, ref: str) -> ModelInfo:
    """A registered model by ``name@version`` (or ``name`` for the newest version)."""
    with wb.transaction(readonly=True) as session:
        return _info(_lookup(session, ref))


def list_models(wb: Workbench) -> list[ModelInfo]:
    """All registered models, oldest first."""
    with wb.transaction(readonly=True) as session:
        return [
            _info(m) for m in session.scalars(select(RegisteredModel).order_by(RegisteredModel.id))
        ]


def registered_files(wb: Workbench, ref: str) -> dict[str, str]:
    """The file hashes audited when model ``ref`` was registered, to re-hash its files against.

    Use these, never the ``models.files`` column, before a model is run: an
    attacker who swaps the files can rewrite that column to match.

    Parameters
    ----------
    wb : Workbench
    ref : str
        ``name@version`` (or ``name`` for the newest version).

    Returns
    -------
    dict of str to str
        ``{relative path: sha256}`` from the ``model.register`` audit entry.

    Raises
    ------
    ModelIntegrityError
        The model's ``files`` or ``digest`` column differs from the audited
        registration, or the registration entry is missing (the message names
        the model).
    NotFoundError
        No such model.
    """
    from workbench.records import anchors

    with wb.transaction(readonly=True) as session:
        return anchors.anchored_model_files(session, _lookup(session, ref))


def verify_model(wb: Workbench, ref: str) -> ModelInfo:
    """Re-hash a registered model's files against the hashes audited at registration.

    Raises ``ModelIntegrityError`` on any change, also when the ``models`` row's
    file list or digest was rewritten to match changed files
    (:mod:`workbench.records.anchors`).
    """
    info = get_model(wb, ref)
    files = registered_files(wb, info.ref)
    verify_model_files(info.storage_path, files)
    return info
