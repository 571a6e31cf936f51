"""The PDF document every report kind shares: page, furniture, metadata, attachments.

Validation reports (:mod:`workbench.reports.builder`) and reader-study reports
(:mod:`workbench.reports.study_report`) are laid out on the same A4 page with the same
header (title; DRAFT marking and what the report is about), footer (report id, "page x of
y", the results SHA-256 the e-signatures sign) and metadata, and carry their attachments
in an incremental update. The creation date comes from the content and the document ID
from the report id and results SHA-256, so building the same content twice gives the same
bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import BaseDocTemplate, Flowable, Frame, PageTemplate

from workbench.errors import ReportError
from workbench.reports._files import write_atomically
from workbench.reports._style import FAIL_INK, MONO, MUTED, RULE, SANS, SANS_BOLD, register_fonts
from workbench.reports.attachments import Attachment

__all__ = [
    "CONTENT_WIDTH",
    "MARGIN_BOTTOM",
    "MARGIN_TOP",
    "MARGIN_X",
    "PAGE_HEIGHT",
    "PAGE_WIDTH",
    "DocumentInfo",
    "clip",
    "embed_attachments",
    "render",
    "require_folder",
    "write_atomically",
]

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN_X = 16 * mm
MARGIN_TOP = 20 * mm
MARGIN_BOTTOM = 20 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN_X


def clip(value: str, length: int) -> str:
    """``value`` cut to ``length`` characters, an ellipsis marking the cut."""
    return value if len(value) <= length else value[: length - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What the page furniture and the PDF metadata of a report show.

    Parameters
    ----------
    report_id : str
        Printed in every footer; with the results SHA-256, the document ID.
    title, author, subject : str
        Document metadata; the title also heads every page.
    keywords : sequence of str
    creator : str
        E.g. ``"Validation Workbench 0.2.0"``.
    created_at : datetime
        The content's creation time: the PDF's creation and modification dates.
    header_right : str
        What the report is about, right of the title on every page.
    draft : bool
        Mark every page "DRAFT — not for release" in the failure colour.
    """

    report_id: str
    title: str
    author: str
    subject: str
    keywords: Sequence[str]
    creator: str
    created_at: datetime
    header_right: str
    draft: bool


class _NumberedCanvas(Canvas):  # type: ignore[misc]
    """Canvas that defers page furniture until the page count is known.

    ``showPage`` only stores each page's state; ``save`` replays the pages
    and draws header and footer with "page x of y".
    """

    def __init__(
        self,
        *args: Any,
        furniture: Callable[[Canvas, int, int], None],
        pages_seen: list[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._furniture = furniture
        self._pages_seen = pages_seen
        self._page_states: list[dict[str, Any]] = []

    def showPage(self) -> None:  # noqa: N802 - reportlab API
        self._page_states.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._page_states)
        for number, state in enumerate(self._page_states, start=1):
            self.__dict__.update(state)
            self._furniture(self, number, total)
            Canvas.showPage(self)
        self._pages_seen.append(total)
        Canvas.save(self)


def _furniture(info: DocumentInfo, results_sha256: str) -> Callable[[Canvas, int, int], None]:
    right = info.header_right
    if info.draft:
        right = "DRAFT \u2014 not for release \u00b7 " + right
    right = clip(right, 90)
    room = CONTENT_WIDTH - stringWidth(right, SANS, 7.5) - 12
    left = info.title
    while len(left) > 8 and stringWidth(left, SANS_BOLD, 7.5) > room:
        left = clip(left, len(left) - 4)

    def draw(canvas: Canvas, number: int, total: int) -> None:
        canvas.saveState()
        top = PAGE_HEIGHT - 12 * mm
        canvas.setFont(SANS_BOLD, 7.5)
        canvas.setFillColor(MUTED)
        canvas.drawString(MARGIN_X, top, left)
        if info.draft:
            canvas.setFillColor(FAIL_INK)
        canvas.setFont(SANS, 7.5)
        canvas.drawRightString(PAGE_WIDTH - MARGIN_X, top, right)
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.5)
        canvas.line(MARGIN_X, top - 3, PAGE_WIDTH - MARGIN_X, top - 3)
        bottom = 10 * mm
        canvas.line(MARGIN_X, bottom + 9, PAGE_WIDTH - MARGIN_X, bottom + 9)
        canvas.setFillColor(MUTED)
        canvas.setFont(SANS, 7)
        canvas.drawString(MARGIN_X, bottom, f"Report {clip(info.report_id, 40)}")
        canvas.setFont(SANS_BOLD, 7)
        canvas.drawRightString(PAGE_WIDTH - MARGIN_X, bottom, f"Page {number} of {total}")
        label = "Results SHA-256 "
        canvas.setFont(SANS, 6)
        canvas.drawString(MARGIN_X, bottom - 8, label)
        canvas.setFont(MONO, 6)
        canvas.drawString(MARGIN_X + stringWidth(label, SANS, 6), bottom - 8, results_sha256)
        canvas.restoreState()

    return draw


def render(info: DocumentInfo, results_sha256: str, story: list[Flowable]) -> tuple[bytes, int]:
    """Lay out ``story`` on A4 pages with the report furniture.

    Parameters
    ----------
    info : DocumentInfo
    results_sha256 : str
        Printed in every footer.
    story : list of Flowable

    Returns
    -------
    (bytes, int)
        The PDF and its number of pages.
    """
    register_fonts()
    buffer = io.BytesIO()
    pages_seen: list[int] = []
    pdf_date = info.created_at.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")

    def canvas_maker(*args: Any, **kwargs: Any) -> _NumberedCanvas:
        canvas = _NumberedCanvas(
            *args, furniture=_furniture(info, results_sha256), pages_seen=pages_seen, **kwargs
        )
        # reproducible: fixed creation date from the content, ID from its identity
        canvas._doc.setDateFormatter(lambda *_: pdf_date)
        canvas._doc.updateSignature(f"{info.report_id}\x00{results_sha256}")
        return canvas

    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN_X,
        rightMargin=MARGIN_X,
        topMargin=MARGIN_TOP,
        bottomMargin=MARGIN_BOTTOM,
        title=info.title,
        author=info.author,
        subject=info.subject,
        keywords=list(info.keywords),
        creator=info.creator,
        producer="Validation Workbench (reportlab, pyHanko)",
        invariant=1,
        lang="en",
        initialFontName=SANS,
        initialFontSize=9,
        pageCompression=1,
    )
    frame = Frame(
        MARGIN_X,
        MARGIN_BOTTOM,
        CONTENT_WIDTH,
        PAGE_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
        id="body",
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame])])
    doc.build(story, canvasmaker=canvas_maker)
    return buffer.getvalue(), pages_seen[-1] if pages_seen else 0


def embed_attachments(pdf: bytes, attachments: Sequence[Attachment], info: DocumentInfo) -> bytes:
    """Append ``attachments`` (sorted by name) to ``pdf`` in an incremental update.

    The document ID and dates stay those of the laid-out PDF, and the metadata is also
    written as XMP, as archival readers expect.
    """
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.embed import EmbeddedFileObject, EmbeddedFileParams, FileSpec, embed_file
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.metadata.model import DocumentMetadata

    created = info.created_at.astimezone(UTC)

    class _PinnedMetadata(DocumentMetadata):  # type: ignore[misc]
        """Document metadata whose modification date stays the content's creation date."""

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "last_modified" and value == "now":
                value = created
            super().__setattr__(name, value)

    class _ReproducibleWriter(IncrementalPdfFileWriter):  # type: ignore[misc]
        """Keeps the document ID and dates instead of drawing fresh ones."""

        @classmethod
        def _handle_id(cls, prev: Any) -> Any:
            first, _ = prev.trailer["/ID"]
            return generic.ArrayObject([first, first])

    writer = _ReproducibleWriter(io.BytesIO(pdf))
    writer._meta = _PinnedMetadata(
        title=info.title,
        author=info.author,
        subject=info.subject,
        keywords=list(info.keywords),
        creator=info.creator,
        created=created,
        last_modified=created,
    )
    params = EmbeddedFileParams(
        embed_size=True, embed_checksum=True, creation_date=created, modification_date=created
    )
    for attachment in attachments:  # already sorted: the name tree must be
        stream = EmbeddedFileObject.from_file_data(
            writer, data=attachment.data, params=params, mime_type=attachment.mime_type
        )
        embed_file(
            writer,
            FileSpec(
                file_spec_string=attachment.name,
                file_name=attachment.name,
                embedded_data=stream,
                description=attachment.description,
                af_relationship=generic.pdf_name("/Data"),
            ),
        )
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


def require_folder(out: Path) -> None:
    """Refuse a destination whose folder does not exist (before any work is done)."""
    if not out.parent.is_dir():
        raise ReportError(
            f"The report's folder should exist. Found no folder {out.parent}; create it first."
        )
