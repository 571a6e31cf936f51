"""Protocol services: versions are immutable, approval is e-signed, changes need a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_team import Team

from workbench.errors import (
    DuplicateError,
    PermissionDeniedError,
    ProtocolError,
    RecordLockedError,
    WorkflowError,
)
from workbench.services import protocols

SHIPPED = Path(__file__).resolve().parents[2] / "validation_protocols"


def test_add_approve_and_supersede(team: Team, tmp_path: Path) -> None:
    source = SHIPPED / "malignancy-classification-v1.yaml"
    info = protocols.add_protocol_version(team.wb, team["qa1"], source)
    assert info.status == "draft" and info.ref == "malignancy-classification@1"
    again = protocols.add_protocol_version(team.wb, team["qa1"], source)
    assert again.sha256 == info.sha256  # identical text: idempotent
    with pytest.raises(PermissionDeniedError):
        protocols.approve_protocol(team.wb, team["rev1"], info.ref, password=team.password("rev1"))
    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        protocols.approve_protocol(team.wb, team["qa1"], info.ref, password=team.password("qa1"))
    approved = protocols.approve_protocol(
        team.wb, team["qa2"], info.ref, password=team.password("qa2")
    )
    assert approved.status == "approved" and approved.approved_by == "qa2"
    with pytest.raises(RecordLockedError):
        protocols.approve_protocol(team.wb, team["qa2"], info.ref, password=team.password("qa2"))

    edited = source.read_text().replace("version: 1", "version: 2", 1)
    changed = tmp_path / "v2.yaml"
    changed.write_text(edited)
    with pytest.raises(WorkflowError, match="reason"):
        protocols.add_protocol_version(team.wb, team["qa1"], changed)
    v2 = protocols.add_protocol_version(team.wb, team["qa1"], changed, reason="tighter CI")
    protocols.approve_protocol(team.wb, team["qa2"], v2.ref, password=team.password("qa2"))
    statuses = {p.ref: p.status for p in protocols.list_protocols(team.wb)}
    assert statuses == {
        "malignancy-classification@1": "superseded",
        "malignancy-classification@2": "approved",
    }
    assert "+version: 2" in protocols.protocol_diff(team.wb, "malignancy-classification@1", v2.ref)


def test_same_version_with_other_text_is_refused(team: Team, tmp_path: Path) -> None:
    source = SHIPPED / "lesion-segmentation-v1.yaml"
    protocols.add_protocol_version(team.wb, team["qa1"], source)
    edited = tmp_path / "edited.yaml"
    edited.write_text(source.read_text() + "\n# a silent edit\n")
    with pytest.raises(DuplicateError, match="never changes"):
        protocols.add_protocol_version(team.wb, team["qa1"], edited)


def test_malformed_yaml_names_the_line(team: Team, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nversion: [1\ntitle: t\n")
    with pytest.raises(ProtocolError, match="line"):
        protocols.add_protocol_version(team.wb, team["qa1"], bad)
