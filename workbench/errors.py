"""Exception types of the workbench.

Every error says what was expected, what was found and, where possible, what
the user can do next. The CLI and the app show ``str(error)`` to the user, so
messages never contain passwords, keys or patient identifiers.
"""

from __future__ import annotations

__all__ = [
    "WorkbenchError",
    "ConfigurationError",
    "DicomReadError",
    "GeometryError",
    "SegmentationError",
    "ManifestError",
    "TestSetLockedError",
    "TestSetNotLockedError",
    "IntegrityError",
    "AuthenticationError",
    "AccountLockedError",
    "PasswordPolicyError",
    "PasswordChangeRequiredError",
    "SessionExpiredError",
    "PermissionDeniedError",
    "WorkflowError",
    "RecordLockedError",
    "SignatureError",
    "AuditChainError",
    "NotFoundError",
    "DuplicateError",
    "ProtocolError",
    "ModelError",
    "ModelIntegrityError",
    "InferenceError",
    "QualityGateError",
    "StatisticsError",
    "NotEstimableError",
    "ReportError",
    "ReportVerificationError",
    "ReasonRequiredError",
    "StorageError",
    "DicomWebError",
]


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ConfigurationError(WorkbenchError):
    """The workdir, database URL, key material or settings are unusable."""


class DicomReadError(WorkbenchError):
    """A file is not DICOM, is truncated, or lacks attributes that are required."""


class GeometryError(WorkbenchError):
    """Slices of a series do not form one consistent volume (spacing, orientation, gaps)."""


class SegmentationError(WorkbenchError):
    """A DICOM SEG object cannot be read, written or aligned with its source series."""


class ManifestError(WorkbenchError):
    """A test-set manifest is malformed or does not match the files on disk."""


class TestSetLockedError(WorkbenchError):
    """An attempt to change a test set that is locked."""

    __test__ = False  # not a pytest test class


class TestSetNotLockedError(WorkbenchError):
    """An action that needs a locked test set was asked for on a draft one."""

    __test__ = False


class IntegrityError(WorkbenchError):
    """Stored content no longer matches its recorded SHA-256."""


class AuthenticationError(WorkbenchError):
    """Username or password wrong. The message never says which of the two."""


class AccountLockedError(AuthenticationError):
    """The account is locked after too many failed attempts or is disabled."""


class PasswordPolicyError(WorkbenchError):
    """A new password breaks the password policy (length, reuse)."""


class PasswordChangeRequiredError(AuthenticationError):
    """The password was reset or has expired and must be changed by its owner first."""


class SessionExpiredError(AuthenticationError):
    """The session was inactive for longer than the configured timeout."""


class PermissionDeniedError(WorkbenchError):
    """The user's role does not allow the action."""


class WorkflowError(WorkbenchError):
    """A step was asked for out of order (e.g. a run on an unlocked test set)."""


class RecordLockedError(WorkflowError):
    """A locked, approved or signed record cannot be modified."""


class SignatureError(WorkbenchError):
    """An electronic signature could not be applied or does not verify."""


class AuditChainError(WorkbenchError):
    """The audit trail's hash chain is broken.

    Attributes
    ----------
    sequence : int or None
        Sequence number of the first bad entry, when known.
    """

    def __init__(self, message: str, *, sequence: int | None = None) -> None:
        super().__init__(message)
        self.sequence = sequence


class NotFoundError(WorkbenchError):
    """A named record (test set, model, protocol, run, report, user) does not exist."""


class DuplicateError(WorkbenchError):
    """A record with the same unique name already exists."""


class ProtocolError(WorkbenchError):
    """A validation protocol is malformed, violates the schema or is inconsistent."""


class ModelError(WorkbenchError):
    """A model file cannot be registered or loaded."""


class ModelIntegrityError(ModelError, IntegrityError):
    """A registered model file changed since registration."""


class InferenceError(WorkbenchError):
    """Inference failed for a case or for the whole run."""


class QualityGateError(WorkbenchError):
    """Critical data-quality findings block the lock or the run."""


class StatisticsError(WorkbenchError):
    """Invalid input to a statistic (shapes, labels, options)."""


class NotEstimableError(StatisticsError):
    """A statistic is undefined for the given data (e.g. AUC with one class)."""


class ReportError(WorkbenchError):
    """A report cannot be built, signed or sealed."""


class ReportVerificationError(ReportError):
    """A report PDF fails verification (signature, hash or database record)."""


class ReasonRequiredError(WorkflowError):
    """A modification of a record was asked for without a reason for the change."""


class StorageError(WorkbenchError):
    """The disk is full or the database file cannot be written; nothing was saved."""


class DicomWebError(WorkbenchError):
    """A DICOMweb server (PS3.18) is unreachable, refuses, or sends incomplete or invalid data."""
