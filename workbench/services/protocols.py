"""Protocol use cases: add a version, approve it (e-signed), list and compare versions.

A protocol version is identified by ``(id, version)`` and by the SHA-256 of its
exact YAML text. Adding the same text again is a no-op; adding a different
text under an existing version is refused: a change makes a new version, with
a reason. Approval is an e-signature (meaning ``approved``) by a ``qa`` user;
an approved version is immutable and the previously approved version of the
same protocol becomes ``superseded``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import (
    DuplicateError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    RecordLockedError,
    WorkflowError,
)
from workbench.protocols import Protocol, diff_protocols, load_protocol
from workbench.records import audit, signatures
from workbench.records.models import ProtocolStatus, ProtocolVersion, SignatureMeaning, utcnow
from workbench.services.context import Actor, Workbench, current_user

__all__ = [
    "ProtocolInfo",
    "add_protocol_version",
    "approve_protocol",
    "list_protocols",
    "get_protocol",
    "parsed_protocol",
    "resolved_protocol",
    "tuning_set_path",
    "protocol_diff",
]


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """A stored protocol version.

    Parameters
    ----------
    protocol_id : str
    version : str
    title, status, sha256, created_by, created_at : str
    approved_by, approved_at, reason : str or None
    yaml_text : str
    """

    protocol_id: str
    version: str
    title: str
    status: str
    sha256: str
    created_by: str
    created_at: str
    approved_by: str | None
    approved_at: str | None
    reason: str | None
    yaml_text: str

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.protocol_id}@{self.version}"

    def load(self) -> Protocol:
        """The validated :class:`~workbench.protocols.Protocol`."""
        return _checked_parse(self.protocol_id, self.version, self.sha256, self.yaml_text)


@functools.lru_cache(maxsize=64)
def _parse(sha256: str, yaml_text: str) -> Protocol:
    """Parse a protocol text once; later calls with the same hash and text reuse the object."""
    return load_protocol(yaml_text.encode("utf-8"))


def _checked_parse(protocol_id: str, version: str, sha256: str, yaml_text: str) -> Protocol:
    actual = hashlib.sha256(yaml_text.encode("utf-8")).hexdigest()
    if actual != sha256:
        raise IntegrityError(
            f"Protocol {protocol_id}@{version}: the stored text no longer matches its recorded "
            f"SHA-256 (recorded {sha256[:12]}..., the text hashes to {actual[:12]}...)."
        )
    return _parse(actual, yaml_text)


def parsed_protocol(pv: ProtocolVersion) -> Protocol:
    """The validated protocol of a stored version, parsed once per text and cached by its hash.

    Raises
    ------
    IntegrityError
        The stored text no longer hashes to the recorded SHA-256, or to the one
        audited when the version was created (:mod:`workbench.records.anchors`).
    """
    from sqlalchemy.orm import object_session

    from workbench.records import anchors

    session = object_session(pv)
    if session is not None:
        anchors.require_equal(anchors.check_protocol(session, pv))
    return _checked_parse(pv.protocol_id, pv.version, pv.sha256, pv.yaml_text)


def _info(p: ProtocolVersion) -> ProtocolInfo:
    return ProtocolInfo(
        protocol_id=p.protocol_id,
        version=p.version,
        title=p.title,
        status=p.status,
        sha256=p.sha256,
        created_by=p.created_by,
        created_at=p.created_at.isoformat(),
        approved_by=p.approved_by,
        approved_at=p.approved_at.isoformat() if p.approved_at else None,
        reason=p.reason,
        yaml_text=p.yaml_text,
    )


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``id@version`` (version optional)."""
    pid, _, version = ref.partition("@")
    return pid, (version or None)


def lookup(session: Session, ref: str, *, approved_only: bool = False) -> ProtocolVersion:
    """Find a protocol version by ``id@version``, or the newest (approved) one by ``id``."""
    pid, version = parse_ref(ref)
    statement = select(ProtocolVersion).where(ProtocolVersion.protocol_id == pid)
    if version is not None:
        statement = statement.where(ProtocolVersion.version == version)
    if approved_only and version is None:
        statement = statement.where(ProtocolVersion.status == ProtocolStatus.APPROVED.value)
    found = session.scalars(statement.order_by(ProtocolVersion.id.desc())).first()
    if found is None:
        raise NotFoundError(
            f"No protocol '{ref}'" + (" with an approved version" if approved_only else "") + "."
        )
    return found


def add_protocol_version(
    wb: Workbench, actor: Actor, source: str | Path | bytes, *, reason: str | None = None
) -> ProtocolInfo:
    """Store a protocol version as a draft (idempotent for identical text).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``protocol.create``.
    source : str, Path or bytes
        Path to the YAML file or its text.
    reason : str, optional
        Why this version was made; required when an earlier version exists.

    Returns
    -------
    ProtocolInfo

    Raises
    ------
    ProtocolError
        Malformed YAML or schema violations (with line numbers).
    DuplicateError
        A different text already holds this id and version.
    """
    protocol = load_protocol(source)
    text = protocol.source_text
    tuning = _tuning_bytes(protocol, source)
    with wb.transaction() as session:
        current_user(session, actor, "protocol.create")
        existing = session.scalars(
            select(ProtocolVersion).where(
                ProtocolVersion.protocol_id == protocol.id,
                ProtocolVersion.version == str(protocol.version),
            )
        ).first()
        if existing is not None:
            if existing.sha256 == protocol.sha256:
                return _info(existing)
            raise DuplicateError(
                f"Protocol {protocol.id} version {protocol.version} already exists with SHA-256 "
                f"{existing.sha256[:12]}, and this text differs ({protocol.sha256[:12]}). "
                "A stored version never changes: raise 'version' and give a reason."
            )
        earlier = session.scalars(
            select(ProtocolVersion).where(ProtocolVersion.protocol_id == protocol.id)
        ).first()
        if earlier is not None and not (reason and reason.strip()):
            raise WorkflowError(
                f"Protocol {protocol.id} already has versions; a new version needs a reason "
                "(--reason)."
            )
        record = ProtocolVersion(
            protocol_id=protocol.id,
            version=str(protocol.version),
            title=protocol.title,
            yaml_text=text,
            sha256=protocol.sha256,
            status=ProtocolStatus.DRAFT.value,
            created_by=actor.username,
            reason=reason,
        )
        session.add(record)
        session.flush()
        new: dict[str, object] = {
            "sha256": protocol.sha256,
            "title": protocol.title,
            "status": record.status,
        }
        if tuning is not None:
            stored = tuning_set_path(wb, protocol.id, protocol.version)
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(tuning)
            new["tuning_set"] = {stored.name: hashlib.sha256(tuning).hexdigest()}
        audit.append(
            session,
            actor=actor.username,
            action="protocol.create",
            record_type="protocol_version",
            record_id=f"{protocol.id}@{protocol.version}",
            new=new,
            reason=reason,
        )
        return _info(record)


def tuning_set_path(wb: Workbench, protocol_id: str, version: int | str) -> Path:
    """Where the tuning set of a protocol's operating-point rule is kept in the workdir."""
    return wb.workdir.root / "protocols" / f"{protocol_id}@{version}" / "tuning.csv"


def _tuning_bytes(protocol: Protocol, source: str | Path | bytes) -> bytes | None:
    """The tuning CSV of an operating-point rule, checked against its pinned SHA-256."""
    op = protocol.operating_point
    if op is None or not op.is_rule:
        return None
    if not isinstance(source, Path) and not (
        isinstance(source, str) and "\n" not in source and Path(source).is_file()
    ):
        raise WorkflowError(
            "The protocol's operating point is a rule on a tuning set; add the protocol from "
            "its file so that the tuning CSV beside it can be read and pinned."
        )
    from workbench.protocols.operating_points import resolve_operating_point

    folder = Path(source).resolve().parent
    resolve_operating_point(protocol, base_dir=folder)  # checks the pinned SHA-256 and the rule
    assert op.tuning_set is not None
    return (folder / op.tuning_set.path).read_bytes()


def resolved_protocol(wb: Workbench, pv: ProtocolVersion) -> Protocol:
    """The parsed protocol with its operating-point rule (if any) resolved on the stored tuning set.

    Raises
    ------
    WorkflowError
        The rule's tuning set was not stored with the protocol.
    """
    protocol = parsed_protocol(pv)
    op = protocol.operating_point
    if op is None or not op.is_rule:
        return protocol
    from workbench.protocols.operating_points import resolve_operating_point

    stored = tuning_set_path(wb, pv.protocol_id, pv.version)
    if not stored.is_file():
        raise WorkflowError(
            f"Protocol {pv.protocol_id}@{pv.version}: the tuning set of its operating-point rule "
            f"is not in the workdir ({stored}); add the protocol again from its file."
        )
    return resolve_operating_point(protocol, tuning_bytes=stored.read_bytes())[0]


def approve_protocol(wb: Workbench, actor: Actor, ref: str, *, password: str) -> ProtocolInfo:
    """Approve a draft protocol version with an e-signature (meaning ``approved``).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``protocol.approve``.
    ref : str
        ``id@version``.
    password : str
        Re-authentication for the signature.

    Returns
    -------
    ProtocolInfo
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "protocol.approve")
        record = lookup(session, ref)
        if record.status != ProtocolStatus.DRAFT.value:
            raise RecordLockedError(
                f"Protocol {record.protocol_id}@{record.version} is {record.status}; only a "
                "draft can be approved."
            )
        if record.created_by == user.username:
            raise PermissionDeniedError(
                f"{user.username} created protocol {record.protocol_id}@{record.version} and "
                "cannot also approve it; another QA user must approve (separation of duties)."
            )
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=SignatureMeaning.APPROVED,
            record_type="protocol_version",
            record_id=f"{record.protocol_id}@{record.version}",
            content_sha256=record.sha256,
        )
        for previous in session.scalars(
            select(ProtocolVersion).where(
                ProtocolVersion.protocol_id == record.protocol_id,
                ProtocolVersion.status == ProtocolStatus.APPROVED.value,
            )
        ):
            previous.status = ProtocolStatus.SUPERSEDED.value
            audit.append(
                session,
                actor=user.username,
                action="protocol.supersede",
                record_type="protocol_version",
                record_id=f"{previous.protocol_id}@{previous.version}",
                old={"status": ProtocolStatus.APPROVED.value},
                new={"status": ProtocolStatus.SUPERSEDED.value},
                reason=f"version {record.version} approved",
            )
        record.status = ProtocolStatus.APPROVED.value
        record.approved_by = user.username
        record.approved_at = utcnow()
        record.approval_signature_id = signature.id
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="protocol.approve",
            record_type="protocol_version",
            record_id=f"{record.protocol_id}@{record.version}",
            old={"status": ProtocolStatus.DRAFT.value},
            new={"status": record.status, "sha256": record.sha256, "signature_id": signature.id},
        )
        return _info(record)


def list_protocols(wb: Workbench) -> list[ProtocolInfo]:
    """Every stored protocol version, oldest first."""
    with wb.transaction(readonly=True) as session:
        return [
            _info(p) for p in session.scalars(select(ProtocolVersion).order_by(ProtocolVersion.id))
        ]


def get_protocol(wb: Workbench, ref: str) -> ProtocolInfo:
    """One protocol version by ``id@version`` (or newest by ``id``)."""
    with wb.transaction(readonly=True) as session:
        return _info(lookup(session, ref))


def protocol_diff(wb: Workbench, old_ref: str, new_ref: str) -> str:
    """Unified diff between two stored protocol versions."""
    old, new = get_protocol(wb, old_ref), get_protocol(wb, new_ref)
    return diff_protocols(old.yaml_text, new.yaml_text)
