"""``workbench model``: register, schema, list, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workbench.cli._common import (
    DbOpt,
    PasswordOpt,
    UserOpt,
    WorkdirOpt,
    _guarded,
    _login,
    _workbench,
    model_app,
)


@model_app.command("register")
@_guarded
def model_register(
    path: Annotated[
        Path, typer.Argument(help="TorchScript file, ONNX file or MONAI bundle folder.")
    ],
    spec: Annotated[
        Path,
        typer.Option(
            "--spec", help="Model spec JSON (docs/model-spec.md; `workbench model schema`)."
        ),
    ],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Register a model: validate its spec, test-load it, copy, hash every file."""
    from workbench.inference.registry import ModelSpec
    from workbench.services.models import register_model

    model_spec = ModelSpec.from_json(spec.read_text(encoding="utf-8"), source=str(spec))
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = register_model(wb, actor, path, model_spec)
    typer.echo(f"registered {info.ref} digest {info.digest}")


@model_app.command("schema")
def model_schema() -> None:
    """Print the JSON Schema of the model spec (fields documented in docs/model-spec.md)."""
    from workbench.inference.registry import model_spec_schema

    typer.echo(json.dumps(model_spec_schema(), indent=2))


@model_app.command("list")
@_guarded
def model_list(workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Registered models: name@version, task, digest."""
    from workbench.services.models import list_models

    with _workbench(workdir, db) as wb:
        for info in list_models(wb):
            typer.echo(f"{info.ref}\t{info.task}\t{info.digest}")


@model_app.command("verify")
@_guarded
def model_verify(ref: str, workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Re-hash a registered model's files."""
    from workbench.services.models import verify_model

    with _workbench(workdir, db) as wb:
        info = verify_model(wb, ref)
    typer.echo(f"{info.ref} intact ({len(info.files)} file(s), digest {info.digest})")
