"""The hash-chained audit trail: appends, reasons, tamper detection, checkpoints, export."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from workbench.errors import AuditChainError, ReasonRequiredError
from workbench.records import audit
from workbench.records.db import open_database
from workbench.records.models import AuditEntry, TestSet


def _fill(db, n, *, actor="qa1"):
    with db.session() as s:
        for i in range(n):
            audit.append(
                s,
                actor=actor,
                action="testset.create",
                record_type="test_set",
                record_id=i,
                new={"name": f"set-{i}", "é": "ü"},
            )


def test_append_links_entries(db):
    _fill(db, 3)
    with db.session() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        assert [e.seq for e in entries] == [1, 2, 3]
        assert entries[0].prev_hash == audit.GENESIS_HASH
        assert entries[1].prev_hash == entries[0].entry_hash
        assert all(e.ts.tzinfo is not None for e in entries)
        assert entries[0].new_value == {"name": "set-0", "é": "ü"}
        status = audit.verify_chain(s)
    assert (status.count, status.head_seq, status.head_hash) == (3, 3, entries[2].entry_hash)


def test_entry_hash_is_sha256_of_canonical_json(db):
    _fill(db, 1)
    import hashlib

    with db.session() as s:
        entry = s.get(AuditEntry, 1)
        fields = audit.entry_fields(entry)
    assert set(fields) == {
        "seq", "ts", "actor", "action", "record_type", "record_id",
        "old_value", "new_value", "reason", "prev_hash",
    }  # fmt: skip
    raw = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(raw.encode("utf-8")).hexdigest() == entry.entry_hash
    assert audit.canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_empty_chain_verifies(db):
    with db.session() as s:
        status = audit.verify_chain(s)
    assert status.count == 0 and status.head_hash == audit.GENESIS_HASH


@pytest.mark.parametrize(
    "action",
    ["testset.update", "user.disable", "user.reset_password", "protocol.supersede", "x.delete"],
)
def test_modification_needs_reason(db, action):
    with pytest.raises(ReasonRequiredError, match="reason"):
        with db.session() as s:
            audit.append(s, actor="a", action=action, record_type="t", record_id=1, reason="  ")
    with db.session() as s:
        audit.append(s, actor="a", action=action, record_type="t", record_id=1, reason="typo fix")
        assert audit.verify_chain(s).count == 1


@pytest.mark.parametrize(
    "action",
    [
        "testset.create",
        "testset.lock",
        "protocol.approve",
        "signature.sign",
        "security.login_failed",
        "run.start",
    ],
)
def test_non_modifications_need_no_reason(action):
    assert not audit.is_modification(action)


def test_append_validates_fields(db):
    with pytest.raises(ValueError, match="actor"):
        with db.session() as s:
            audit.append(s, actor="", action="a.create", record_type="t", record_id=1)
    with pytest.raises(TypeError, match="finite"):
        with db.session() as s:
            audit.append(
                s, actor="a", action="a.create", record_type="t", record_id=1, new=float("nan")
            )


def test_to_jsonable_converts_values():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = audit.to_jsonable({"t": when, "p": Path("a/b"), "s": {2, 1}, "b": b"xy", "n": None})
    assert value["t"] == "2026-01-02T03:04:05.000000+00:00"
    assert value["p"] == "a/b" and value["s"] == [1, 2] and len(value["b"]["sha256"]) == 64


def test_change_and_entry_commit_together(db):
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(TestSet(name="x", root_path="/x", created_by="qa1"))
            audit.append(
                s, actor="qa1", action="testset.create", record_type="test_set", record_id="x"
            )
            raise RuntimeError("crash before commit")
    with db.session() as s:
        assert s.scalars(select(TestSet)).all() == []
        assert audit.count_entries(s) == 0


# ------------------------------------------------------------------ tamper detection


def _tamper(db, *statements):
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _bad_sequence(db):
    with db.session() as s:
        with pytest.raises(AuditChainError) as info:
            audit.verify_chain(s)
    return info.value.sequence, str(info.value)


def test_edited_entry_detected(db, drop_guards):
    _fill(db, 5)
    drop_guards(db)
    _tamper(db, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    sequence, message = _bad_sequence(db)
    assert sequence == 3 and "edited" in message


def test_edited_value_detected(db, drop_guards):
    _fill(db, 5)
    drop_guards(db)
    _tamper(db, "UPDATE audit_log SET new_value = NULL WHERE seq = 4")
    assert _bad_sequence(db)[0] == 4


def test_deleted_entry_detected(db, drop_guards):
    _fill(db, 5)
    drop_guards(db)
    _tamper(db, "DELETE FROM audit_log WHERE seq = 2")
    sequence, message = _bad_sequence(db)
    assert sequence == 2 and "missing" in message


def test_deleted_and_renumbered_detected(db, drop_guards):
    _fill(db, 5)
    drop_guards(db)
    _tamper(
        db,
        "DELETE FROM audit_log WHERE seq = 2",
        "UPDATE audit_log SET seq = seq - 1 WHERE seq = 3",
        "UPDATE audit_log SET seq = seq - 1 WHERE seq = 4",
        "UPDATE audit_log SET seq = seq - 1 WHERE seq = 5",
    )
    assert _bad_sequence(db)[0] == 2


def test_inserted_entry_detected(db, drop_guards):
    _fill(db, 4)
    drop_guards(db)
    # Shift entries 3.. up and forge a well-formed entry 3 linked to entry 2.
    _tamper(db, *(f"UPDATE audit_log SET seq = {n + 1} WHERE seq = {n}" for n in (4, 3)))
    with db.session() as s:
        two = s.get(AuditEntry, 2)
        forged = AuditEntry(
            seq=3,
            ts=two.ts,
            actor="mallory",
            action="testset.create",
            record_type="test_set",
            record_id="99",
            prev_hash=two.entry_hash,
        )
        forged.entry_hash = audit.entry_hash(forged)
        s.add(forged)
    sequence, message = _bad_sequence(db)
    assert sequence == 4  # the original entry 3, now 4, no longer links or hashes


def test_reordered_entries_detected(db, drop_guards):
    _fill(db, 5)
    drop_guards(db)
    _tamper(
        db,
        "UPDATE audit_log SET seq = 100 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 100",
    )
    assert _bad_sequence(db)[0] == 2


def test_truncated_tail_detected_by_checkpoint(db, drop_guards, tmp_path):
    _fill(db, 6)
    key = tmp_path / "keys" / audit.CHECKPOINT_KEY_NAME
    with db.session() as s:
        checkpoint = audit.export_checkpoint(s, key)
    assert checkpoint["entry_count"] == 6 and checkpoint["algorithm"] == "Ed25519"
    checkpoint = json.loads(json.dumps(checkpoint))  # as kept outside the database
    _fill(db, 2)
    with db.session() as s:
        # 6 entries, the audited checkpoint itself (#7), 2 more: growth is fine
        assert audit.verify_checkpoint(s, checkpoint, key).count == 9
    drop_guards(db)
    _tamper(db, "DELETE FROM audit_log WHERE seq > 4")
    with db.session() as s:
        assert audit.verify_chain(s).count == 4  # the chain alone cannot see it
        with pytest.raises(AuditChainError, match="truncated") as info:
            audit.verify_checkpoint(s, checkpoint, key)
    assert info.value.sequence == 5


def test_rewritten_chain_detected_by_checkpoint(db, drop_guards, tmp_path):
    _fill(db, 3)
    key = tmp_path / "ck.pem"
    with db.session() as s:
        checkpoint = audit.export_checkpoint(s, key)
    drop_guards(db)
    _tamper(db, "DELETE FROM audit_log")
    _fill(db, 3, actor="mallory")  # a complete, self-consistent forged chain
    with db.session() as s:
        audit.verify_chain(s)
        with pytest.raises(AuditChainError, match="rewritten") as info:
            audit.verify_checkpoint(s, checkpoint, key)
    assert info.value.sequence == 3


def test_forged_checkpoint_refused(db, tmp_path):
    _fill(db, 2)
    key = tmp_path / "ck.pem"
    with db.session() as s:
        checkpoint = audit.export_checkpoint(s, key)
    forged = {**checkpoint, "entry_count": 1}
    other = tmp_path / "other.pem"
    audit.load_or_create_signing_key(other)
    with db.session() as s:
        with pytest.raises(AuditChainError, match="signature does not verify"):
            audit.verify_checkpoint(s, forged, key)
        with pytest.raises(AuditChainError, match="signature does not verify"):
            audit.verify_checkpoint(s, checkpoint, other)
        public_pem = (tmp_path / "ck.pem.pub").read_bytes()
        # the chain now also holds the checkpoint's own audit entry (#3)
        assert audit.verify_checkpoint(s, checkpoint, public_pem).count == 3
        assert audit.verify_checkpoint(s, checkpoint, checkpoint["public_key"]).count == 3


def test_checkpoint_key_is_private(tmp_path):
    key_path = tmp_path / "keys" / audit.CHECKPOINT_KEY_NAME
    key = audit.load_or_create_signing_key(key_path)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    again = audit.load_or_create_signing_key(key_path)
    assert audit.load_public_key(again) is not None
    assert audit.load_public_key(key).public_bytes_raw() == again.public_key().public_bytes_raw()


# ------------------------------------------------------------------ export


def test_export_filters(db):
    with db.session() as s:
        audit.append(s, actor="qa1", action="testset.create", record_type="test_set", record_id=1)
        audit.append(
            s, actor="rev1", action="discrepancy.adjudicate", record_type="discrepancy", record_id=7
        )
        audit.append(s, actor="qa1", action="testset.lock", record_type="test_set", record_id=1)
    with db.session() as s:
        assert [e["seq"] for e in audit.export_audit(s, record_type="test_set", record_id=1)] == [
            1,
            3,
        ]
        assert [e["seq"] for e in audit.export_audit(s, actor="rev1")] == [2]
        future = datetime.now(UTC) + timedelta(hours=1)
        assert audit.export_audit(s, since=future) == []
        assert len(audit.export_audit(s, until=future)) == 3
        entry = audit.export_audit(s)[0]
    assert set(entry) >= {"seq", "ts", "actor", "entry_hash", "prev_hash", "reason"}


def test_csv_neutralizes_formulas(tmp_path):
    first = {"seq": 1, "actor": "=cmd|' /C calc'!A0", "action": "+x", "record_type": "-1"}
    first |= {"record_id": "@SUM(1)", "new_value": {"a": 1}}
    second = {"seq": 2, "actor": "qa1", "action": "testset.lock", "record_id": "3"}
    entries = [first, second]
    path = tmp_path / "audit.csv"
    audit.write_audit_csv(entries, path)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert rows[0]["actor"].startswith("'=") and rows[0]["action"] == "'+x"
    assert rows[0]["record_type"] == "'-1" and rows[0]["record_id"] == "'@SUM(1)"
    assert rows[0]["new_value"] == '{"a":1}' and rows[1]["actor"] == "qa1"
    with open(path, encoding="utf-8", newline="") as handle:
        assert audit.audit_csv_text(entries) == handle.read()


def test_json_export_round_trips(db, tmp_path):
    _fill(db, 2)
    with db.session() as s:
        entries = audit.export_audit(s)
    out = tmp_path / "audit.json"
    audit.write_audit_json(entries, out)
    assert json.loads(out.read_text(encoding="utf-8")) == entries
    buffer = io.StringIO()
    audit.write_audit_json(entries, buffer)
    assert json.loads(buffer.getvalue()) == entries


# ------------------------------------------------------------------ concurrency


def test_concurrent_threads_keep_chain_gap_free(db):
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(25):
                with db.session() as s:
                    audit.append(
                        s, actor=f"t{k}", action="run.start", record_type="run", record_id=i
                    )
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        status = audit.verify_chain(s)
        seqs = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
    assert status.count == 100 and seqs == list(range(1, 101))


def _process_writer(url: str, worker: int, n: int) -> None:
    db = open_database(url, migrate=False)
    for i in range(n):
        with db.session() as s:
            audit.append(
                s,
                actor=f"worker{worker}",
                action="run.start",
                record_type="run",
                record_id=i,
                new={"i": i},
            )
    db.dispose()


@pytest.mark.slow
def test_concurrent_processes_keep_chain_gap_free(db_url):
    n_workers, n_writes = 4, 500
    db = open_database(db_url)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_process_writer, args=(db_url, k, n_writes))
        for k in range(n_workers)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * n_workers
    with db.session() as s:
        status = audit.verify_chain(s)
        seqs = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        per_worker = {
            k: s.scalar(
                text("SELECT count(*) FROM audit_log WHERE actor = :a"), {"a": f"worker{k}"}
            )
            for k in range(n_workers)
        }
    assert status.count == n_workers * n_writes
    assert seqs == list(range(1, n_workers * n_writes + 1))
    assert per_worker == dict.fromkeys(range(n_workers), n_writes)
    db.dispose()
