"""Files embedded in a report PDF, and reading them back.

Every report carries the data its tables were computed from, so that an
inspector can recompute them without access to the workbench database:

``results.json``
    Canonical JSON (sorted keys, no whitespace, UTF-8) of
    :meth:`ReportContent.results_document`. Its SHA-256 is the *results
    SHA-256* printed on every page; signatures sign this hash.
``per-case.csv``
    One row per case (all cases, including excluded and failed ones).
``protocol.yaml``
    The approved protocol text, verbatim.
``manifest.json``
    The test set's manifest digest and, when supplied, its entries
    (relative path -> SHA-256).
``report-content.json``
    Canonical JSON of the whole :class:`ReportContent` (signatures and the
    audit trail included) except the per-case rows, which are in the CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import ReportError, ReportVerificationError
from workbench.reports.content import ReportContent, canonical_json

__all__ = [
    "ATTACHMENT_DESCRIPTIONS",
    "Attachment",
    "MANIFEST_JSON",
    "PER_CASE_CSV",
    "PROTOCOL_YAML",
    "REPORT_CONTENT_JSON",
    "RESULTS_JSON",
    "extract_attachments",
    "report_attachments",
]

RESULTS_JSON = "results.json"
PER_CASE_CSV = "per-case.csv"
PROTOCOL_YAML = "protocol.yaml"
MANIFEST_JSON = "manifest.json"
REPORT_CONTENT_JSON = "report-content.json"

ATTACHMENT_DESCRIPTIONS = {
    RESULTS_JSON: "Results of the run (canonical JSON); its SHA-256 is the results SHA-256",
    PER_CASE_CSV: "Per-case table: one row per case, all cases",
    PROTOCOL_YAML: "Approved validation protocol, verbatim",
    MANIFEST_JSON: "Test-set manifest digest and entries (path -> SHA-256)",
    REPORT_CONTENT_JSON: "Full report content incl. signatures and audit trail (canonical JSON)",
}

_MIME = {
    RESULTS_JSON: "application/json",
    PER_CASE_CSV: "text/csv",
    PROTOCOL_YAML: "application/yaml",
    MANIFEST_JSON: "application/json",
    REPORT_CONTENT_JSON: "application/json",
}


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file to embed: name, bytes, MIME type and description."""

    name: str
    data: bytes
    mime_type: str
    description: str

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the data."""
        return hashlib.sha256(self.data).hexdigest()


def per_case_csv(rows: tuple[dict[str, Any], ...]) -> bytes:
    """Write per-case rows as CSV (UTF-8, ``\\n`` line ends, columns in first-seen order).

    Parameters
    ----------
    rows : tuple of dict
        One dict of scalars per case.

    Returns
    -------
    bytes
    """
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="raise"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return (which can
    come from labels files or DICOM headers) gets a leading ``'``; numbers are kept.
    """
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def report_attachments(content: ReportContent) -> list[Attachment]:
    """The attachments of a report, sorted by name (the order of the PDF name tree).

    Parameters
    ----------
    content : ReportContent

    Returns
    -------
    list of Attachment
    """
    csv_bytes = per_case_csv(content.per_case)
    csv_sha = hashlib.sha256(csv_bytes).hexdigest()
    results = canonical_json(content.results_document(csv_sha))
    manifest = canonical_json(
        {
            "schema": "workbench.manifest-digest/1",
            "test_set": content.test_set.name,
            "manifest_digest": content.test_set.manifest_digest,
            "entries": dict(sorted(content.test_set.manifest_entries.items())),
        }
    )
    full = content.to_dict()
    full.pop("per_case")
    full["per_case_csv_sha256"] = csv_sha
    data = {
        RESULTS_JSON: results,
        PER_CASE_CSV: csv_bytes,
        PROTOCOL_YAML: content.protocol.yaml_text.encode("utf-8"),
        MANIFEST_JSON: manifest,
        REPORT_CONTENT_JSON: canonical_json(full),
    }
    return [
        Attachment(name, payload, _MIME[name], ATTACHMENT_DESCRIPTIONS[name])
        for name, payload in sorted(data.items())
    ]


def extract_attachments(pdf_path: str | Path) -> dict[str, bytes]:
    """Read every embedded file of a PDF.

    Parameters
    ----------
    pdf_path : str or Path
        A report PDF (sealed or not).

    Returns
    -------
    dict of str to bytes
        File name -> content, in name-tree order. Empty when the PDF has none.

    Raises
    ------
    ReportVerificationError
        When the file cannot be read as a PDF.
    """
    from pyhanko.pdf_utils.reader import PdfFileReader

    path = Path(pdf_path)
    try:
        with path.open("rb") as handle:
            reader = PdfFileReader(handle, strict=False)
            return _read_name_tree(reader.root)
    except ReportError:
        raise
    except OSError as error:
        raise ReportVerificationError(f"Cannot open {path.name}: {error.strerror}.") from None
    except Exception as error:  # pyHanko raises several types for malformed files
        raise ReportVerificationError(
            f"{path.name} should be a readable PDF. Found a file that cannot be parsed "
            f"({type(error).__name__}: {error})."
        ) from None


def _read_name_tree(root: Any) -> dict[str, bytes]:
    try:
        tree = root["/Names"]["/EmbeddedFiles"]
    except KeyError:
        return {}
    found: dict[str, bytes] = {}
    pending = [tree]
    while pending:
        node = pending.pop(0)
        if "/Kids" in node:
            pending.extend(kid.get_object() for kid in node["/Kids"])
        names = node["/Names"] if "/Names" in node else []
        for index in range(0, len(names) - 1, 2):
            name = str(names[index])
            spec = names[index + 1].get_object()
            streams = spec["/EF"]
            found[name] = (streams["/UF"] if "/UF" in streams else streams["/F"]).data
    return found
