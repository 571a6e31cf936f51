"""Fonts, colours and paragraph styles shared by the report and its figures.

The TrueType fonts are shipped in ``workbench/reports/fonts`` (DejaVu, Bitstream
Vera licence in ``LICENSE-DejaVu.txt``) and embedded as subsets in every PDF,
so that a report renders the same everywhere and needs nothing external.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.styles import ParagraphStyle, StyleSheet1
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from workbench.errors import ReportError

FONT_DIR = Path(__file__).parent / "fonts"
SANS = "WorkbenchSans"
SANS_BOLD = "WorkbenchSans-Bold"
SANS_ITALIC = "WorkbenchSans-Oblique"
MONO = "WorkbenchMono"

_FONT_FILES = {
    SANS: "DejaVuSans.ttf",
    SANS_BOLD: "DejaVuSans-Bold.ttf",
    SANS_ITALIC: "DejaVuSans-Oblique.ttf",
    MONO: "DejaVuSansMono.ttf",
}

INK = colors.HexColor("#1a1a1a")
MUTED = colors.HexColor("#5a5a5a")
RULE = colors.HexColor("#9a9a9a")
HEADER_FILL = colors.HexColor("#e6e9ef")
ZEBRA = colors.HexColor("#f6f7f9")
PASS_FILL = colors.HexColor("#d7f0dc")
PASS_INK = colors.HexColor("#155d27")
FAIL_FILL = colors.HexColor("#f8d7da")
FAIL_INK = colors.HexColor("#8a1c24")
NEUTRAL_FILL = colors.HexColor("#eeeeee")
ACCENT = colors.HexColor("#1f4e79")
BAND = colors.HexColor("#b9cde5")
SERIES_COLOURS = (
    colors.HexColor("#1f4e79"),
    colors.HexColor("#c55a11"),
    colors.HexColor("#548235"),
    colors.HexColor("#7030a0"),
    colors.HexColor("#7f6000"),
)


@cache
def register_fonts() -> None:
    """Register the shipped DejaVu fonts with reportlab (once per process).

    Raises
    ------
    ReportError
        When a font file is missing from the installed package.
    """
    for name, filename in _FONT_FILES.items():
        path = FONT_DIR / filename
        if not path.is_file():
            raise ReportError(
                f"Report font {filename} should be in {FONT_DIR}. Found no such file; "
                "reinstall the workbench package."
            )
        pdfmetrics.registerFont(TTFont(name, str(path)))
    pdfmetrics.registerFontFamily(
        SANS, normal=SANS, bold=SANS_BOLD, italic=SANS_ITALIC, boldItalic=SANS_BOLD
    )


def text(value: object) -> str:
    """Escape a data string for Paragraph markup (``<``, ``>``, ``&`` and quotes)."""
    return escape(str(value), {'"': "&quot;", "'": "&#39;"})


@cache
def styles() -> StyleSheet1:
    """Paragraph styles of the report."""
    register_fonts()
    sheet = StyleSheet1()
    base = ParagraphStyle(
        "Body", fontName=SANS, bulletFontName=SANS, fontSize=9, leading=12, textColor=INK
    )
    sheet.add(base)
    sheet.add(ParagraphStyle("Para", parent=base, spaceAfter=5))
    sheet.add(ParagraphStyle("Small", parent=base, fontSize=7.5, leading=9.5))
    sheet.add(ParagraphStyle("Cell", parent=base, fontSize=7.5, leading=9.2))
    sheet.add(
        ParagraphStyle("CellBold", parent=base, fontName=SANS_BOLD, fontSize=7.5, leading=9.2)
    )
    sheet.add(ParagraphStyle("CellMono", parent=base, fontName=MONO, fontSize=6.5, leading=8.2))
    sheet.add(ParagraphStyle("Mono", parent=base, fontName=MONO, fontSize=7.5, leading=9.5))
    sheet.add(
        ParagraphStyle(
            "Caption",
            parent=base,
            fontName=SANS_ITALIC,
            fontSize=8,
            leading=10,
            textColor=MUTED,
            spaceBefore=2,
            spaceAfter=8,
        )
    )
    sheet.add(
        ParagraphStyle(
            "Title",
            parent=base,
            fontName=SANS_BOLD,
            fontSize=20,
            leading=25,
            spaceAfter=6,
            textColor=ACCENT,
        )
    )
    sheet.add(
        ParagraphStyle(
            "Subtitle", parent=base, fontSize=11, leading=14, textColor=MUTED, spaceAfter=14
        )
    )
    sheet.add(
        ParagraphStyle(
            "H1",
            parent=base,
            fontName=SANS_BOLD,
            fontSize=14,
            leading=18,
            spaceBefore=14,
            spaceAfter=8,
            textColor=ACCENT,
            keepWithNext=1,
        )
    )
    sheet.add(
        ParagraphStyle(
            "H2",
            parent=base,
            fontName=SANS_BOLD,
            fontSize=10.5,
            leading=14,
            spaceBefore=10,
            spaceAfter=5,
            textColor=INK,
            keepWithNext=1,
        )
    )
    sheet.add(ParagraphStyle("Bullet", parent=base, leftIndent=12, bulletIndent=2, spaceAfter=2))
    sheet.add(
        ParagraphStyle(
            "Banner",
            parent=base,
            fontName=SANS_BOLD,
            fontSize=9,
            leading=12,
            alignment=TA_CENTER,
            textColor=FAIL_INK,
            backColor=FAIL_FILL,
            borderPadding=4,
            spaceBefore=4,
            spaceAfter=10,
        )
    )
    sheet.add(
        ParagraphStyle(
            "Secondary",
            parent=base,
            fontName=SANS_BOLD,
            fontSize=9,
            leading=12,
            textColor=colors.HexColor("#7f6000"),
            backColor=colors.HexColor("#fff2cc"),
            borderPadding=4,
            spaceBefore=4,
            spaceAfter=8,
        )
    )
    return sheet
