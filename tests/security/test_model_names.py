"""Model registration: unsafe names never reach the file system; bad models are refused.

A spec's name and version become ``models/<name>/<version>/`` in the workdir, and a
leftover folder there is deleted before the copy. Before the names were checked, a
spec named ``../keys`` deleted the signing keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")

from workbench.errors import ConfigurationError, ModelError
from workbench.inference.registry import InputSpec, ModelSpec
from workbench.naming import InvalidNameError
from workbench.records.models import AuditEntry, RegisteredModel
from workbench.services import accounts, models
from workbench.services.context import Actor, Workbench

ADMIN_PW = "Harbor-Lamp-2026!"
QA_PW = "Quill-Maple-2026!"


class _Threshold(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=[1, 2, 3, 4]).unsqueeze(1)


@pytest.fixture
def qa(tmp_path: Path) -> Iterator[tuple[Workbench, Actor]]:
    wb = Workbench.open(tmp_path / "wb")
    accounts.bootstrap_admin(wb, username="admin", full_name="Ada Admin", password=ADMIN_PW)
    admin = accounts.login(wb, "admin", ADMIN_PW)
    accounts.create_user(
        wb,
        admin,
        username="qa1",
        full_name="Q A",
        role="qa",
        password=QA_PW,
        must_change_password=False,
    )
    try:
        yield wb, accounts.login(wb, "qa1", QA_PW)
    finally:
        wb.close()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.ts"
    torch.jit.script(_Threshold()).save(str(path))
    return path


def _spec(name: str = "safe-model", version: str = "1.0") -> ModelSpec:
    spec = ModelSpec(
        name="placeholder",
        version="1",
        task="classification",
        format="torchscript",
        input=InputSpec(
            target_spacing=(2.0, 2.0, 2.0),
            roi_size=(8, 8, 8),
            segmentation_output=None,
            score_activation="none",
        ),
    )
    # model_copy skips validation: the service must check the names itself.
    return spec.model_copy(update={"name": name, "version": version})


def _keys_snapshot(wb: Workbench) -> dict[str, bytes]:
    keys = wb.workdir.keys_dir
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "canary.pem").write_bytes(b"not a real key")
    return {p.name: p.read_bytes() for p in keys.iterdir() if p.is_file()}


def _refusals(wb: Workbench) -> list[AuditEntry]:
    with wb.transaction(readonly=True) as session:
        return list(
            session.scalars(select(AuditEntry).where(AuditEntry.action == "model.refused")).all()
        )


def _registered(wb: Workbench) -> list[str]:
    with wb.transaction(readonly=True) as session:
        return [f"{m.name}@{m.version}" for m in session.scalars(select(RegisteredModel)).all()]


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("../keys", "1.0"),
        ("safe", "../../keys"),
        ("..", "keys"),
        ("/tmp/elsewhere", "1.0"),
        ("safe", "/etc"),
        ("two\nlines", "1.0"),
        ("\u202egnp.exe", "1.0"),  # right-to-left override
        ("with space", "1.0"),
        (".hidden", "1.0"),
    ],
)
def test_unsafe_names_are_refused_and_delete_nothing(
    qa: tuple[Workbench, Actor], model_file: Path, name: str, version: str
) -> None:
    wb, actor = qa
    before = _keys_snapshot(wb)
    models_before = sorted(p.name for p in wb.workdir.models_dir.iterdir())
    with pytest.raises(InvalidNameError, match="Invalid model (name|version)"):
        models.register_model(wb, actor, model_file, _spec(name, version))
    after = {p.name: p.read_bytes() for p in wb.workdir.keys_dir.iterdir() if p.is_file()}
    assert after == before
    assert sorted(p.name for p in wb.workdir.models_dir.iterdir()) == models_before
    assert _registered(wb) == []
    (refusal,) = _refusals(wb)
    assert "\n" not in refusal.record_id and "\u202e" not in refusal.record_id


def test_a_symlink_out_of_the_models_folder_is_refused(
    qa: tuple[Workbench, Actor], model_file: Path
) -> None:
    wb, actor = qa
    before = _keys_snapshot(wb)
    (wb.workdir.models_dir / "evil").symlink_to(wb.workdir.keys_dir, target_is_directory=True)
    (wb.workdir.keys_dir / "1.0").mkdir()
    (wb.workdir.keys_dir / "1.0" / "inner.pem").write_bytes(b"inner")
    with pytest.raises(ConfigurationError, match="resolves outside"):
        models.register_model(wb, actor, model_file, _spec("evil", "1.0"))
    assert (wb.workdir.keys_dir / "1.0" / "inner.pem").read_bytes() == b"inner"
    assert {p.name: p.read_bytes() for p in wb.workdir.keys_dir.iterdir() if p.is_file()} == before
    assert len(_refusals(wb)) == 1


def test_a_symlink_to_another_model_is_refused(
    qa: tuple[Workbench, Actor], model_file: Path
) -> None:
    wb, actor = qa
    real = models.register_model(wb, actor, model_file, _spec("real", "1.0"))
    (wb.workdir.models_dir / "alias").symlink_to(
        wb.workdir.models_dir / "real", target_is_directory=True
    )
    with pytest.raises(ConfigurationError, match="symbolic link"):
        models.register_model(wb, actor, model_file, _spec("alias", "1.0"))
    models.verify_model(wb, real.ref)  # the real model's files are untouched


def test_random_bytes_are_refused_before_anything_is_stored(
    qa: tuple[Workbench, Actor], tmp_path: Path
) -> None:
    wb, actor = qa
    junk = tmp_path / "random.ts"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(ModelError, match="was not registered: Expected a TorchScript archive"):
        models.register_model(wb, actor, junk, _spec("junk", "1.0"))
    assert _registered(wb) == []
    assert not (wb.workdir.models_dir / "junk").exists()
    assert list((wb.workdir.models_dir / ".incoming").iterdir()) == []
    (refusal,) = _refusals(wb)
    assert refusal.record_id == "junk@1.0" and "TorchScript" in str(refusal.new_value)


def test_a_model_with_the_wrong_output_is_refused(
    qa: tuple[Workbench, Actor], model_file: Path
) -> None:
    wb, actor = qa
    spec = _spec("wrong", "1.0")
    three = spec.model_copy(
        update={
            "input": spec.input.model_copy(
                update={
                    "score_classes": ["a", "b", "c"],
                    "positive_class": "b",
                    "score_activation": "softmax",
                }
            )
        }
    )
    with pytest.raises(ModelError, match=r"expected 3 class channels .* Found shape \(1, 1\)"):
        models.register_model(wb, actor, model_file, three)
    assert _registered(wb) == [] and not (wb.workdir.models_dir / "wrong").exists()


def test_a_good_model_registers_and_a_leftover_folder_is_replaced(
    qa: tuple[Workbench, Actor], model_file: Path
) -> None:
    wb, actor = qa
    leftover = wb.workdir.models_dir / "good" / "1.0"
    leftover.mkdir(parents=True)
    (leftover / "stale.bin").write_bytes(b"from a registration that did not commit")
    info = models.register_model(wb, actor, model_file, _spec("good", "1.0"))
    assert Path(info.storage_path) == (leftover / "model.ts").resolve()
    assert sorted(p.name for p in leftover.iterdir()) == ["model.ts"]
    assert list(info.files) == ["model.ts"]
    with wb.transaction(readonly=True) as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "model.register")
        ).one()
    recorded = entry.new_value if isinstance(entry.new_value, dict) else json.loads(entry.new_value)
    assert recorded["test_load"]["input_shape"] == [1, 1, 8, 8, 8]
    assert recorded["test_load"]["outputs"] == {"score": [1, 1]}
