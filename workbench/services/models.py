"""Model registry use cases: register a candidate model and re-verify its files.

Registration copies the model file (TorchScript) or bundle folder into the
workdir, records the SHA-256 of every file and the model's digest, and stores
its specification and card. Before every run the files are hashed again and a
change is refused (:class:`~workbench.errors.ModelIntegrityError`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from workbench.errors import DuplicateError, ModelError
from workbench.inference.registry import (
    ModelSpec,
    hash_model_files,
    model_digest,
    verify_model_files,
)
from workbench.records import audit
from workbench.records.models import RegisteredModel
from workbench.services.context import Actor, Workbench, current_user, get_one

__all__ = ["ModelInfo", "register_model", "list_models", "get_model", "verify_model", "parse_ref"]


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


def register_model(
    wb: Workbench,
    actor: Actor,
    path: str | Path,
    spec: ModelSpec,
    *,
    card: dict[str, Any] | None = None,
) -> ModelInfo:
    """Register a model file or bundle folder under ``spec.name@spec.version``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``model.register``.
    path : str or Path
        TorchScript file or MONAI bundle folder.
    spec : ModelSpec
        Task, input specification and intended use.
    card : dict, optional
        Model card: training data, known limitations.

    Returns
    -------
    ModelInfo

    Raises
    ------
    DuplicateError
        ``name@version`` is already registered (register a new version instead).
    ModelError
        The path does not exist.
    """
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise ModelError(f"Model path {source} does not exist.")
    with wb.transaction() as session:
        current_user(session, actor, "model.register")
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
        target = wb.workdir.models_dir / spec.name / spec.version
        if target.exists():
            shutil.rmtree(target)  # leftovers of a registration that did not commit
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
            stored = target
        else:
            target.mkdir(parents=True)
            stored = target / source.name
            shutil.copy2(source, stored)
        hashes = hash_model_files(stored)
        digest = model_digest(hashes)
        model = RegisteredModel(
            name=spec.name,
            version=spec.version,
            task=str(spec.task),
            format=str(spec.format),
            spec=spec.model_dump(mode="json"),
            files=hashes,
            digest=digest,
            storage_path=str(stored),
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
            new={"digest": digest, "files": hashes, "task": str(spec.task)},
        )
        return _info(model)


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


def verify_model(wb: Workbench, ref: str) -> ModelInfo:
    """Re-hash a registered model's files; raise ``ModelIntegrityError`` on any change."""
    info = get_model(wb, ref)
    verify_model_files(info.storage_path, info.files)
    return info
