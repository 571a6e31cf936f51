"""Integrity anchors: the audited hash of every record that matters.

A mutable column (``models.files``, ``test_sets.manifest_json``,
``protocol_versions.sha256``, ``runs.verdict``, ``reports.sealed_sha256``, a
signature row) can be rewritten together with the content it describes. The
audit entry that created the record cannot: it is chained, and the chain head
is signed into checkpoints (:mod:`workbench.records.audit`). Every
verification therefore recomputes the hash from the content and compares it
with the value in that entry (the *anchor*), never with the column alone.

The anchor of a record is the **first** audit entry of its creating action
(a record is registered, locked, created, completed, sealed or signed once), so
an entry appended later by someone who can write to the database does not
replace it. Accounts and discrepancies change state through the services (an
account is disabled, a discrepancy decided), so their anchor is the newest
audited value of each field; the workbench signs a checkpoint straight after
each of those steps, and ``audit verify`` refuses such an entry that no
checkpoint covers (:data:`workbench.records.audit.ANCHORING_ACTIONS`).

==============================  ==========================  ===========================
record                          anchoring action            anchored fields
==============================  ==========================  ===========================
model ``name@version``          ``model.register``          ``digest``, ``files``
test set ``name``               ``testset.lock``            ``manifest_digest``
protocol ``id@version``         ``protocol.create``         ``sha256``
run ``RUN-...``                 ``run.complete``            ``verdict``, ``results_sha256``
report ``VR-...``               ``report.build``,           ``results_sha256``;
                                ``report.seal``             ``sealed_sha256``
signature (any record)          ``signature.sign``          every field of the signature
user (by id)                    ``user.create``,            ``username``, ``full_name``,
                                ``user.disable``,           ``role``, ``disabled``
                                ``user.reset_password``     (newest value of each)
case result ``RUN-.../case``    ``case.record``             ``status``, ``score``,
                                                            ``mask_sha256``, mark,
                                                            lesion and match hashes
discrepancy (by id)             ``discrepancy.create``      ``run``, ``case_id``, ``rule``
discrepancy, adjudication       ``discrepancy.adjudicate``  ``status`` (newest); each
                                                            read's reviewer, decision,
                                                            comment and kind
==============================  ==========================  ===========================

Not anchored: a discrepancy's A/B assignment (``blinding``; recording it in the
trail, even hashed, would unblind reviewers who read the trail), sign-in
counters and lockouts (security events), and the detail columns of case results
(``metrics``, ``strata``) other than the hashes listed.

:func:`check_all_records` walks every record against its anchor and
:func:`check_append_only_guards` checks that the database still refuses
changes to the append-only tables; ``workbench audit verify`` runs both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from workbench.errors import IntegrityError, ModelIntegrityError
from workbench.records.audit import audited_discrepancy_status
from workbench.records.models import (
    Adjudication,
    AuditEntry,
    CaseResult,
    Discrepancy,
    ProtocolVersion,
    RegisteredModel,
    Report,
    Run,
    Signature,
    TestSet,
    User,
)

__all__ = [
    "APPEND_ONLY_TABLES",
    "AnchorMismatch",
    "anchor_of",
    "require_equal",
    "model_anchor",
    "anchored_model_files",
    "manifest_anchor",
    "protocol_anchor",
    "run_anchor",
    "report_anchor",
    "check_model",
    "check_test_set",
    "check_protocol",
    "check_run",
    "check_report",
    "check_signature",
    "check_signature_set",
    "USER_FIELDS",
    "USER_ANCHOR_ACTIONS",
    "CASE_FIELDS",
    "user_anchors",
    "check_user",
    "check_users",
    "check_case_results",
    "audited_discrepancy_status",
    "unresolved_discrepancies",
    "check_discrepancies",
    "check_all_records",
    "check_append_only_guards",
]

#: Tables whose rows the database refuses to change (triggers of the migrations).
APPEND_ONLY_TABLES = ("audit_log", "signatures", "audit_checkpoints")


@dataclass(frozen=True, slots=True)
class AnchorMismatch:
    """One record that differs from its audited anchor.

    Attributes
    ----------
    record_type, record_id : str
        The record, e.g. ``("model", "demo-good@1.0.0")``.
    field : str
        What differs (``"files"``, ``"verdict"``, ...).
    anchored : str
        The value in the anchoring audit entry (shortened).
    found : str
        The value recomputed from the content or read from the record now.
    sequence : int or None
        Sequence number of the anchoring entry (``None`` when there is none).
    """

    record_type: str
    record_id: str
    field: str
    anchored: str
    found: str
    sequence: int | None = None

    def describe(self) -> str:
        """One line: which record, which field, expected (anchored) and found."""
        where = f" (audit entry #{self.sequence})" if self.sequence else ""
        return (
            f"{self.record_type} {self.record_id}: {self.field} is {self.found}, but the audited "
            f"value{where} is {self.anchored}"
        )


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "..."
    text_value = repr(value)
    return text_value if len(text_value) <= 60 else text_value[:57] + "..."


def anchor_of(session: Session, record_type: str, record_id: str, action: str) -> AuditEntry | None:
    """The first audit entry of ``action`` on a record, or ``None``.

    Parameters
    ----------
    session : Session
    record_type, record_id : str
        The record as the audit trail names it.
    action : str
        The anchoring action (``"model.register"``, ...).
    """
    return session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.record_type == record_type,
            AuditEntry.record_id == str(record_id),
            AuditEntry.action == action,
        )
        .order_by(AuditEntry.seq)
        .limit(1)
    ).first()


def _anchored_value(
    session: Session, record_type: str, record_id: str, action: str, key: str
) -> tuple[Any, int]:
    entry = anchor_of(session, record_type, record_id, action)
    value = entry.new_value.get(key) if entry and isinstance(entry.new_value, dict) else None
    if entry is None or value is None:
        raise IntegrityError(
            f"{record_type} {record_id} has no '{action}' audit entry recording its {key}; "
            "the record was not created through the workbench or its audit entry is missing. "
            "Run 'workbench audit verify'."
        )
    return value, entry.seq


def require_equal(mismatches: Iterable[AnchorMismatch]) -> None:
    """Raise :class:`IntegrityError` naming every mismatch (nothing when empty)."""
    found = list(mismatches)
    if found:
        raise IntegrityError(
            "Record differs from its audited anchor: "
            + "; ".join(m.describe() for m in found)
            + ". The record was changed outside the workbench."
        )


# --------------------------------------------------------------------------- anchors


def model_anchor(session: Session, ref: str) -> tuple[dict[str, str], str]:
    """``(files, digest)`` audited when model ``name@version`` was registered.

    Raises
    ------
    IntegrityError
        No registration entry.
    """
    files, _ = _anchored_value(session, "model", ref, "model.register", "files")
    digest, _ = _anchored_value(session, "model", ref, "model.register", "digest")
    return {str(k): str(v) for k, v in dict(files).items()}, str(digest)


def anchored_model_files(session: Session, model: RegisteredModel) -> dict[str, str]:
    """The file hashes audited when ``model`` was registered, for re-hashing its files.

    A run hashes the model's files against these, never against the
    ``models.files`` column: the column and the files can be rewritten together.

    Parameters
    ----------
    session : Session
    model : RegisteredModel

    Returns
    -------
    dict of str to str
        ``{relative path: sha256}`` from the ``model.register`` entry.

    Raises
    ------
    ModelIntegrityError
        The model has no registration entry, or its ``files`` or ``digest``
        column differs from the audited value (the message names the model).
    """
    differs = check_model(session, model)
    if differs:
        raise ModelIntegrityError(
            f"Model {model.name}@{model.version} differs from its registration: "
            + "; ".join(m.describe() for m in differs)
            + ". The models table was changed outside the workbench; the model is refused."
        )
    files, _digest = model_anchor(session, f"{model.name}@{model.version}")
    return files


def manifest_anchor(session: Session, name: str) -> str:
    """The manifest digest audited (and e-signed) when test set ``name`` was locked."""
    digest, _ = _anchored_value(session, "test_set", name, "testset.lock", "manifest_digest")
    return str(digest)


def protocol_anchor(session: Session, ref: str) -> str:
    """The SHA-256 of the protocol text audited when ``id@version`` was created."""
    digest, _ = _anchored_value(session, "protocol_version", ref, "protocol.create", "sha256")
    return str(digest)


def run_anchor(session: Session, run_uid: str) -> dict[str, Any]:
    """``{"verdict", "results_sha256", "seq"}`` audited when the run completed."""
    entry = anchor_of(session, "run", run_uid, "run.complete")
    if entry is None or not isinstance(entry.new_value, dict):
        raise IntegrityError(
            f"run {run_uid} has no 'run.complete' audit entry; its verdict and results are not "
            "anchored. Run 'workbench audit verify'."
        )
    return {
        "verdict": entry.new_value.get("verdict"),
        "results_sha256": entry.new_value.get("results_sha256"),
        "seq": entry.seq,
    }


def report_anchor(session: Session, report_uid: str) -> dict[str, Any]:
    """``{"results_sha256", "sealed_sha256"}`` audited at build and seal (``None`` if absent)."""
    built = anchor_of(session, "report", report_uid, "report.build")
    sealed = anchor_of(session, "report", report_uid, "report.seal")
    return {
        "results_sha256": (built.new_value or {}).get("results_sha256") if built else None,
        "build_seq": built.seq if built else None,
        "sealed_sha256": (sealed.new_value or {}).get("sealed_sha256") if sealed else None,
        "seal_seq": sealed.seq if sealed else None,
    }


# --------------------------------------------------------------------------- checks


def _sha256_json(value: Any) -> str:
    from workbench.records.audit import canonical_json

    return hashlib.sha256(canonical_json(value)).hexdigest()


def check_model(
    session: Session, model: RegisteredModel, files_now: Mapping[str, str] | None = None
) -> list[AnchorMismatch]:
    """Compare a model's stored (and, when given, re-hashed) files with the audited ones.

    Parameters
    ----------
    session : Session
    model : RegisteredModel
    files_now : Mapping, optional
        ``{relative path: sha256}`` recomputed from the files on disk.
    """
    ref = f"{model.name}@{model.version}"
    entry = anchor_of(session, "model", ref, "model.register")
    if entry is None or not isinstance(entry.new_value, dict):
        return [AnchorMismatch("model", ref, "registration", "an audit entry", "none")]
    files = {str(k): str(v) for k, v in dict(entry.new_value.get("files") or {}).items()}
    out = []
    if dict(model.files or {}) != files:
        out.append(
            AnchorMismatch(
                "model", ref, "files column", "the audited files", _short(model.files), entry.seq
            )
        )
    if model.digest != entry.new_value.get("digest"):
        out.append(
            AnchorMismatch(
                "model",
                ref,
                "digest",
                _short(entry.new_value.get("digest")),
                _short(model.digest),
                entry.seq,
            )
        )
    if files_now is not None:
        for path in sorted(set(files) | set(files_now)):
            if files.get(path) != files_now.get(path):
                out.append(
                    AnchorMismatch(
                        "model",
                        ref,
                        f"file {path}",
                        _short(files.get(path)),
                        _short(files_now.get(path)),
                        entry.seq,
                    )
                )
    return out


def check_test_set(session: Session, test_set: TestSet) -> list[AnchorMismatch]:
    """Compare a locked test set's manifest (digest recomputed from it) with the audited one."""
    if test_set.status != "locked":
        return []
    from workbench.dicom.manifest import Manifest
    from workbench.errors import ManifestError

    entry = anchor_of(session, "test_set", test_set.name, "testset.lock")
    if entry is None or not isinstance(entry.new_value, dict):
        return [AnchorMismatch("test_set", test_set.name, "lock", "an audit entry", "none")]
    anchored = str(entry.new_value.get("manifest_digest"))
    try:
        found = Manifest.from_json(test_set.manifest_json or "").digest
    except (ManifestError, ValueError):
        found = "an unreadable manifest"
    out = []
    if found != anchored:
        out.append(
            AnchorMismatch(
                "test_set",
                test_set.name,
                "manifest digest",
                _short(anchored),
                _short(found),
                entry.seq,
            )
        )
    if test_set.manifest_digest != anchored:
        out.append(
            AnchorMismatch(
                "test_set",
                test_set.name,
                "manifest_digest column",
                _short(anchored),
                _short(test_set.manifest_digest),
                entry.seq,
            )
        )
    return out


def check_protocol(session: Session, pv: ProtocolVersion) -> list[AnchorMismatch]:
    """Recompute the protocol text's SHA-256 and compare it with the audited one."""
    ref = f"{pv.protocol_id}@{pv.version}"
    entry = anchor_of(session, "protocol_version", ref, "protocol.create")
    if entry is None or not isinstance(entry.new_value, dict):
        return [AnchorMismatch("protocol_version", ref, "creation", "an audit entry", "none")]
    anchored = str(entry.new_value.get("sha256"))
    found = hashlib.sha256(pv.yaml_text.encode("utf-8")).hexdigest()
    if found != anchored:
        return [
            AnchorMismatch(
                "protocol_version", ref, "text SHA-256", _short(anchored), _short(found), entry.seq
            )
        ]
    return []


def check_run(session: Session, run: Run) -> list[AnchorMismatch]:
    """Compare a completed run's verdict and results (hash recomputed) with the audited ones."""
    if run.status != "completed":
        return []
    entry = anchor_of(session, "run", run.run_uid, "run.complete")
    if entry is None or not isinstance(entry.new_value, dict):
        return [AnchorMismatch("run", run.run_uid, "completion", "an audit entry", "none")]
    out = []
    anchored_verdict = entry.new_value.get("verdict")
    if run.verdict != anchored_verdict:
        out.append(
            AnchorMismatch(
                "run", run.run_uid, "verdict", repr(anchored_verdict), repr(run.verdict), entry.seq
            )
        )
    anchored_sha = entry.new_value.get("results_sha256")
    found = _sha256_json(run.results) if run.results is not None else None
    if found != anchored_sha or run.results_sha256 != anchored_sha:
        out.append(
            AnchorMismatch(
                "run",
                run.run_uid,
                "results SHA-256",
                _short(anchored_sha),
                _short(found),
                entry.seq,
            )
        )
    return out


def check_report(
    session: Session, report: Report, sealed_file_sha256: str | None = None
) -> list[AnchorMismatch]:
    """Compare a report's stored hashes (and a sealed file's hash) with the audited ones."""
    anchor = report_anchor(session, report.report_uid)
    out = []
    uid = report.report_uid
    if anchor["results_sha256"] is not None and report.content_sha256 != anchor["results_sha256"]:
        out.append(
            AnchorMismatch(
                "report",
                uid,
                "results SHA-256",
                _short(anchor["results_sha256"]),
                _short(report.content_sha256),
                anchor["build_seq"],
            )
        )
    if report.status == "sealed" or report.sealed_sha256 or sealed_file_sha256:
        if anchor["sealed_sha256"] is None:
            out.append(
                AnchorMismatch("report", uid, "seal", "an audited 'report.seal' entry", "none")
            )
        else:
            for what, value in (
                ("sealed_sha256 column", report.sealed_sha256),
                ("sealed file SHA-256", sealed_file_sha256),
            ):
                if value is not None and value != anchor["sealed_sha256"]:
                    out.append(
                        AnchorMismatch(
                            "report",
                            uid,
                            what,
                            _short(anchor["sealed_sha256"]),
                            _short(value),
                            anchor["seal_seq"],
                        )
                    )
    return out


def check_signature(session: Session, signature: Signature) -> list[AnchorMismatch]:
    """Compare a signature row with the ``signature.sign`` entry written when it was made."""
    from workbench.records.signatures import signature_digest

    where = f"{signature.id} on {signature.record_type} {signature.record_id}"
    candidates = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action == "signature.sign")
        .where(AuditEntry.record_type == signature.record_type)
        .where(AuditEntry.record_id == signature.record_id)
        .order_by(AuditEntry.seq)
    ).all()
    entry = next(
        (
            e
            for e in candidates
            if isinstance(e.new_value, dict) and e.new_value.get("signature_id") == signature.id
        ),
        None,
    )
    if entry is None:
        return [AnchorMismatch("signature", where, "signing", "an audit entry", "none")]
    audited = entry.new_value
    assert isinstance(audited, dict)
    signed_at = signature.signed_at.astimezone(UTC).isoformat(timespec="microseconds")
    found = {
        "username": signature.username,
        "printed_name": signature.printed_name,
        "role": signature.role,
        "meaning": signature.meaning,
        "signed_at": signed_at,
        "content_sha256": signature.content_sha256,
        "signature_sha256": signature.signature_sha256,
    }
    expected = {**{k: audited.get(k) for k in found}, "username": entry.actor}
    out = [
        AnchorMismatch("signature", where, key, _short(expected[key]), _short(value), entry.seq)
        for key, value in found.items()
        if value != expected[key]
    ]
    if signature_digest(signature) != signature.signature_sha256:
        out.append(
            AnchorMismatch(
                "signature",
                where,
                "signature hash",
                "its content's hash",
                _short(signature.signature_sha256),
                entry.seq,
            )
        )
    return out


def check_signature_set(
    session: Session,
    record_type: str,
    record_id: str,
    *,
    required: Iterable[tuple[str, str, Iterable[str]]],
    content_sha256: str,
    embedded: list[Mapping[str, Any]] | None,
    excluded_from: Mapping[str, str] | None = None,
) -> list[tuple[str, bool, str]]:
    """Check that a record carries exactly its required signatures, intact and as embedded.

    Parameters
    ----------
    session : Session
    record_type, record_id : str
        The signed record, e.g. ``("report", "VR-...")``.
    required : iterable of (role, meaning, distinct_from)
        The signatures the record needs (from its protocol); ``distinct_from``
        lists meanings whose signers must be other people.
    content_sha256 : str
        SHA-256 of the content as it is now (e.g. the PDF's ``results.json``).
    embedded : list of Mapping or None
        The signature records embedded in the sealed document (``signature_id,
        username, printed_name, role, meaning, signed_at, content_sha256``);
        ``None`` when the document holds none.
    excluded_from : Mapping, optional
        ``{meaning: username}`` who may not sign with that meaning (the author
        may not approve).

    Returns
    -------
    list of (name, ok, detail)
        One line per check, for a verification report.
    """
    from workbench.records.signatures import signatures_for, verify

    out: list[tuple[str, bool, str]] = []
    rows = signatures_for(session, record_type, record_id)
    wanted = [(role, meaning, list(distinct)) for role, meaning, distinct in required]
    have = sorted((s.role, s.meaning) for s in rows)
    need = sorted((role, meaning) for role, meaning, _ in wanted)
    out.append(
        (
            "required signatures",
            have == need,
            "exactly " + ", ".join(f"{m} ({r})" for r, m in need)
            if have == need
            else f"expected {', '.join(f'{m} ({r})' for r, m in need) or 'none'}; found "
            + (", ".join(f"{m} ({r})" for r, m in have) or "none"),
        )
    )
    signer = {s.meaning: s.username for s in rows}
    for _role, meaning, distinct in wanted:
        for other in distinct:
            if meaning in signer and signer.get(other) == signer[meaning]:
                out.append(
                    (
                        f"separation of duties ({meaning})",
                        False,
                        f"{signer[meaning]} signed as both {other!r} and {meaning!r}",
                    )
                )
    for meaning, username in (excluded_from or {}).items():
        if signer.get(meaning) == username:
            out.append(
                (f"separation of duties ({meaning})", False, f"{username} may not sign {meaning}")
            )
    for s in rows:
        check = verify(session, s.id, content_sha256, record_type=record_type, record_id=record_id)
        differs = check_signature(session, s)
        ok = check.valid and not differs
        detail = check.status if not differs else "; ".join(d.describe() for d in differs)
        out.append((f"e-signature {s.meaning} by {s.printed_name}", ok, detail))
    if embedded is None:
        out.append(("embedded signature record", False, "the document embeds no signatures"))
        return out

    def key(value: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(
            str(value.get(k) or "")
            for k in ("signature_id", "username", "printed_name", "meaning", "content_sha256")
        )

    stored = sorted(
        key(
            {
                "signature_id": s.id,
                "username": s.username,
                "printed_name": s.printed_name,
                "meaning": s.meaning,
                "content_sha256": s.content_sha256,
            }
        )
        for s in rows
    )
    shown = sorted(key(e) for e in embedded)
    out.append(
        (
            "embedded signature record",
            stored == shown,
            f"{len(shown)} signature(s) in the document match the records"
            if stored == shown
            else f"the document embeds {len(shown)} signature(s) "
            f"({', '.join(f'{k[3]} by {k[1]}' for k in shown) or 'none'}); the records hold "
            f"{len(stored)} ({', '.join(f'{k[3]} by {k[1]}' for k in stored) or 'none'})",
        )
    )
    return out


#: User fields the entries of :data:`USER_ANCHOR_ACTIONS` record as the account's state.
USER_FIELDS = ("username", "full_name", "role", "disabled")

#: Entries that set an account's anchored state. Each is one of the audit's
#: anchoring actions, so a signed checkpoint follows it; a step that changes a
#: role must be added here and there.
USER_ANCHOR_ACTIONS = ("user.create", "user.disable", "user.reset_password")

#: Per-case values a ``case.record`` entry holds (detection hashes only for detection runs).
CASE_FIELDS = ("status", "score", "mask_sha256")
_CASE_FILE_HASHES = ("marks_sha256", "lesions_sha256", "matches_sha256")


def _new_value(entry: AuditEntry) -> dict[str, Any]:
    return entry.new_value if isinstance(entry.new_value, dict) else {}


def user_anchors(
    session: Session, user_id: int | None = None
) -> dict[str, dict[str, tuple[Any, int]]]:
    """The audited state of accounts: ``{user id: {field: (value, seq)}}``.

    Each field of :data:`USER_FIELDS` takes its value from the newest entry of
    :data:`USER_ANCHOR_ACTIONS` that records it (creation, disabling, password
    reset); ``seq`` is that entry's sequence number.

    Parameters
    ----------
    session : Session
    user_id : int, optional
        Only this account (default: every account).
    """
    query = select(AuditEntry).where(
        AuditEntry.record_type == "user", AuditEntry.action.in_(USER_ANCHOR_ACTIONS)
    )
    if user_id is not None:
        query = query.where(AuditEntry.record_id == str(user_id))
    out: dict[str, dict[str, tuple[Any, int]]] = {}
    for entry in session.scalars(query.order_by(AuditEntry.seq)):
        value = _new_value(entry)
        fields = out.setdefault(str(entry.record_id), {})
        fields.update({key: (value[key], entry.seq) for key in USER_FIELDS if key in value})
    return {key: fields for key, fields in out.items() if fields}


def check_user(
    session: Session,
    user: User,
    anchored: Mapping[str, Mapping[str, tuple[Any, int]]] | None = None,
) -> list[AnchorMismatch]:
    """Compare one account's name, role and disabled flag with their audited values.

    Parameters
    ----------
    session : Session
    user : User
    anchored : Mapping, optional
        :func:`user_anchors` of every account, when checking many.
    """
    where = f"{user.username} (id {user.id})"
    found_anchors = user_anchors(session, user.id) if anchored is None else anchored
    fields = found_anchors.get(str(user.id))
    if not fields:
        return [AnchorMismatch("user", where, "creation", "a 'user.create' entry", "none")]
    return [
        AnchorMismatch("user", where, key, _short(value), _short(getattr(user, key)), seq)
        for key, (value, seq) in fields.items()
        if getattr(user, key) != value
    ]


def check_users(session: Session) -> list[AnchorMismatch]:
    """Compare every account's name, role and disabled flag with their audited values.

    A role raised, an account re-enabled or deleted directly in the ``users``
    table is named here; sign-in counters and lockouts are security events, not
    anchored.
    """
    anchored = user_anchors(session)
    out: list[AnchorMismatch] = []
    present: set[str] = set()
    for user in session.scalars(select(User).order_by(User.id)):
        present.add(str(user.id))
        out += check_user(session, user, anchored)
    for user_id, fields in anchored.items():
        if user_id not in present:  # accounts are disabled, never deleted
            name, seq = fields.get("username", ("?", None))
            out.append(
                AnchorMismatch("user", f"{name} (id {user_id})", "row", "an account", "none", seq)
            )
    return out


def check_case_results(session: Session) -> list[AnchorMismatch]:
    """Compare every case result (status, score, mask and detection hashes) with its entry.

    The anchor of a case is its ``case.record`` entry, written when the case
    was stored; a row deleted since is named too (while its run exists).
    """
    from workbench.records.audit import bounded_text

    recorded: dict[str, AuditEntry] = {}
    for entry in session.scalars(
        select(AuditEntry).where(AuditEntry.action == "case.record").order_by(AuditEntry.seq)
    ):
        recorded.setdefault(str(entry.record_id), entry)
    out: list[AnchorMismatch] = []
    seen: set[str] = set()
    rows = session.execute(
        select(
            Run.run_uid,
            CaseResult.case_id,
            CaseResult.status,
            CaseResult.score,
            CaseResult.mask_sha256,
            CaseResult.metrics,
        )
        .join(Run, CaseResult.run_id == Run.id)
        .order_by(CaseResult.id)
    )
    for run_uid, case_id, status, score, mask_sha256, metrics in rows:
        ref = bounded_text("/".join((str(run_uid), str(case_id))))
        seen.add(ref)
        case_entry = recorded.get(ref)
        if case_entry is None:
            out.append(
                AnchorMismatch("case_result", ref, "recording", "a 'case.record' entry", "none")
            )
            continue
        value = _new_value(case_entry)
        found = {"status": status, "score": score, "mask_sha256": mask_sha256}
        found.update({key: (metrics or {}).get(key) for key in _CASE_FILE_HASHES})
        for key, now in found.items():
            if key in value and value[key] != now:
                out.append(
                    AnchorMismatch(
                        "case_result", ref, key, _short(value[key]), _short(now), case_entry.seq
                    )
                )
    runs = set(session.scalars(select(Run.run_uid)))
    for ref, entry in recorded.items():
        if ref not in seen and ref.split("/", 1)[0] in runs:
            what = f"a {_new_value(entry).get('status')} case result"
            out.append(AnchorMismatch("case_result", ref, "row", what, "none", entry.seq))
    return out


def unresolved_discrepancies(session: Session, run: Run) -> list[Discrepancy]:
    """A run's discrepancies not adjudicated, by their row **or** their audited decision.

    For gates (blinding, approval): a status set to ``adjudicated`` in the
    database without the reviewers' audited decisions leaves the discrepancy
    unresolved.
    """
    rows = list(run.discrepancies)
    audited = audited_discrepancy_status(session, [d.id for d in rows])
    return [d for d in rows if d.status != "adjudicated" or audited.get(str(d.id)) != "adjudicated"]


def check_discrepancies(session: Session) -> list[AnchorMismatch]:
    """Compare every discrepancy and adjudication with the entries that created and decided it.

    The run, case and rule come from ``discrepancy.create``; the status from
    the newest ``discrepancy.adjudicate`` entry (``open`` before any); each
    adjudication row (reviewer, decision, comment, kind) from the
    ``discrepancy.adjudicate`` entry of its e-signature. A discrepancy marked
    adjudicated in the database (which would lift the blinding and the
    approval gate), a decision rewritten, or a discrepancy or read deleted is
    named here.
    """
    created: dict[str, AuditEntry] = {}
    decided: dict[str, list[AuditEntry]] = {}
    for entry in session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.record_type == "discrepancy",
            AuditEntry.action.in_(("discrepancy.create", "discrepancy.adjudicate")),
        )
        .order_by(AuditEntry.seq)
    ):
        if entry.action == "discrepancy.create":
            created.setdefault(str(entry.record_id), entry)
        else:
            decided.setdefault(str(entry.record_id), []).append(entry)
    reads: dict[int, list[Adjudication]] = {}
    for read_row in session.scalars(select(Adjudication).order_by(Adjudication.id)):
        reads.setdefault(read_row.discrepancy_id, []).append(read_row)
    out: list[AnchorMismatch] = []
    rows = session.execute(
        select(Discrepancy, Run.run_uid)
        .join(Run, Discrepancy.run_id == Run.id)
        .order_by(Discrepancy.id)
    )
    seen: set[str] = set()
    for d, run_uid in rows:
        where = f"{d.id} ({run_uid}/{d.case_id})"
        seen.add(str(d.id))
        made_entry = created.get(str(d.id))
        if made_entry is None:
            out.append(
                AnchorMismatch(
                    "discrepancy", where, "creation", "a 'discrepancy.create' entry", "none"
                )
            )
            continue
        made = _new_value(made_entry)
        for key, now in (("run", run_uid), ("case_id", d.case_id), ("rule", d.rule)):
            if key in made and made[key] != now:
                out.append(
                    AnchorMismatch(
                        "discrepancy", where, key, _short(made[key]), _short(now), made_entry.seq
                    )
                )
        decisions = decided.get(str(d.id), [])
        last = decisions[-1] if decisions else made_entry
        status = _new_value(last).get("status") or "open"
        if d.status != status:
            out.append(
                AnchorMismatch(
                    "discrepancy", where, "status", repr(status), repr(d.status), last.seq
                )
            )
        by_signature = {_new_value(e).get("signature_id"): e for e in decisions}
        for row in reads.get(d.id, []):
            read = f"{where} read {row.id} by {row.reviewer}"
            audited = by_signature.pop(row.signature_id, None)
            if audited is None:
                out.append(
                    AnchorMismatch(
                        "adjudication", read, "decision", "a 'discrepancy.adjudicate' entry", "none"
                    )
                )
                continue
            value = {**_new_value(audited), "reviewer": audited.actor}
            for key in ("reviewer", "decision", "comment", "kind"):
                now = getattr(row, key)
                if key in value and value[key] != now:
                    out.append(
                        AnchorMismatch(
                            "adjudication", read, key, _short(value[key]), _short(now), audited.seq
                        )
                    )
        for audited in by_signature.values():
            decision = _new_value(audited).get("decision")
            out.append(
                AnchorMismatch(
                    "adjudication",
                    where,
                    "row",
                    f"a {decision!r} read by {audited.actor}",
                    "none",
                    audited.seq,
                )
            )
    runs = set(session.scalars(select(Run.run_uid)))
    for d_id, made_entry in created.items():
        made = _new_value(made_entry)
        if d_id not in seen and made.get("run") in runs:
            where = f"{d_id} ({made.get('run')}/{made.get('case_id')})"
            out.append(
                AnchorMismatch(
                    "discrepancy",
                    where,
                    "row",
                    "a discrepancy to adjudicate",
                    "none",
                    made_entry.seq,
                )
            )
    return out


def check_all_records(session: Session) -> list[AnchorMismatch]:
    """Walk every anchored record against its audit entry.

    Models, test sets, protocols, runs, reports, signatures, user accounts,
    case results, discrepancies and adjudications.

    Returns
    -------
    list of AnchorMismatch
        Empty when every record matches its audited anchor. File contents
        (model files, test-set images, sealed PDFs) are checked by ``model
        verify``, ``testset verify`` and ``report verify``.
    """
    out: list[AnchorMismatch] = []
    for model in session.scalars(select(RegisteredModel).order_by(RegisteredModel.id)):
        out += check_model(session, model)
    for test_set in session.scalars(select(TestSet).order_by(TestSet.id)):
        out += check_test_set(session, test_set)
    for pv in session.scalars(select(ProtocolVersion).order_by(ProtocolVersion.id)):
        out += check_protocol(session, pv)
    for run in session.scalars(select(Run).order_by(Run.id)):
        out += check_run(session, run)
    for report in session.scalars(select(Report).order_by(Report.id)):
        out += check_report(session, report)
    out += check_users(session)
    out += check_case_results(session)
    out += check_discrepancies(session)
    present = set()
    for signature in session.scalars(select(Signature).order_by(Signature.id)):
        present.add(signature.id)
        out += check_signature(session, signature)
    for entry in session.scalars(
        select(AuditEntry).where(AuditEntry.action == "signature.sign").order_by(AuditEntry.seq)
    ):
        value = entry.new_value if isinstance(entry.new_value, dict) else {}
        if value.get("signature_id") not in present:
            where = f"{value.get('signature_id')} on {entry.record_type} {entry.record_id}"
            meaning = f"a {value.get('meaning')} signature by {entry.actor}"
            out.append(AnchorMismatch("signature", where, "row", meaning, "none", entry.seq))
    return out


def check_append_only_guards(session: Session) -> list[str]:
    """Names of the append-only triggers that are missing (empty when all are in place)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        present = set(
            session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all()
        )
        wanted = [f"{t}_no_{op}" for t in APPEND_ONLY_TABLES for op in ("update", "delete")]
    elif dialect == "postgresql":
        present = set(
            session.scalars(
                text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D'")
            ).all()
        )
        wanted = [f"{t}_no_{op}" for t in APPEND_ONLY_TABLES for op in ("change", "truncate")]
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        return []
    return [name for name in wanted if name not in present]
