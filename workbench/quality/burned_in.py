"""Burned-in text in the pixels: OCR over the frames of images likely to carry it.

Ultrasound, projection radiographs and secondary captures often carry the
patient's name, ID or dates burned into the pixels, whatever Burned In
Annotation (0028,0301) says (PS3.15 E.1.1 expects the header to tell, many
devices leave it out). Each sampled frame is scaled to 8 bits and read with
Tesseract (Debian ``tesseract-ocr``, through ``pytesseract``); words with a
confidence below :data:`MIN_CONFIDENCE` are dropped, the rest grouped in lines.
Each line becomes one finding with its region, its confidence and which header
identifiers (names, IDs, dates, institution) it matches. The text itself is
never written to a finding, a log or an error: it may be the PHI the check is
looking for.

OCR reads about 2.3 frames of 1024 x 768 a second (about 0.45 s a
frame; ``benchmarks/bench_quality.py``) and an image gets up to three frames, so it
runs only when asked (``run_quality_checks(..., ocr=True)``,
``workbench testset check --ocr``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from workbench.dicom.pixels import to_display
from workbench.quality.findings import Finding, Severity, attribute

__all__ = [
    "MIN_CONFIDENCE",
    "OCR_MODALITIES",
    "TextRegion",
    "burned_in_findings",
    "find_text",
    "header_identifiers",
    "wants_ocr",
]

CHECK = "burned_in_text"
MIN_CONFIDENCE = 40.0
"""Words Tesseract reads with less confidence (0-100) are ignored, unless the line
holds a value of the header (a name, an ID, a date): a match is evidence enough."""
_FLOOR = 10.0
_MIN_HEIGHT = 6

OCR_MODALITIES = frozenset({"US", "CR", "DX", "MG", "SC", "OT", "XC", "ES", "IO", "PX", "XA", "RF"})
"""Modalities whose images commonly carry burned-in annotations."""

_DATE = re.compile(r"^(\d{8}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2})$")
_LONG_NUMBER = re.compile(r"\d{5,}")
_WORD = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class TextRegion:
    """One line of text found in a frame; the text itself is not kept.

    Parameters
    ----------
    frame : int
        0-based frame number.
    box : tuple of int
        ``(x, y, width, height)`` in pixels of the frame.
    position : str
        Where in the frame: ``top-left`` ... ``bottom-right``, ``centre``.
    confidence : float
        Mean word confidence (0-100).
    n_characters : int
        Letters and digits read.
    matches : tuple of str
        Header attributes whose value the text contains (``PatientName``...).
    looks_like : tuple of str
        Patterns the text has: ``date``, ``identifier`` (5+ digits), ``words``.
    """

    frame: int
    box: tuple[int, int, int, int]
    position: str
    confidence: float
    n_characters: int
    matches: tuple[str, ...]
    looks_like: tuple[str, ...]


def wants_ocr(ds: Dataset, *, category: str = "") -> bool:
    """Whether an image should be searched for burned-in text.

    Images of :data:`OCR_MODALITIES` and every image whose Burned In Annotation
    is absent or NO (a YES is a finding of its own and needs no OCR).
    """
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if burned == "YES":
        return False
    return str(ds.get("Modality", "") or "").upper() in OCR_MODALITIES or burned in ("", "NO")


def _normal(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


_LOOKALIKE = str.maketrans("OILSBZ", "011582")


def _fold(text: str) -> str:
    """Fold characters OCR confuses (O/0, I/1, S/5...) so that matching tolerates them."""
    return text.translate(_LOOKALIKE)


def _dates(value: str) -> set[str]:
    digits = re.sub(r"\D", "", value)
    if len(digits) != 8:
        return set()
    y, m, d = digits[:4], digits[4:6], digits[6:]
    return {digits, d + m + y, m + d + y, d + m + y[2:], m + d + y[2:]}


def header_identifiers(ds: Dataset) -> dict[str, set[str]]:
    """Normalised identifying values of the header, by attribute keyword.

    Names are split in components of three letters or more, dates are given in
    the usual day/month/year orders, IDs and institution words as they are;
    everything upper case with only letters and digits.
    """
    out: dict[str, set[str]] = {}

    def put(keyword: str, values: Iterable[str]) -> None:
        kept = {v for v in values if len(v) >= 3}
        if kept:
            out.setdefault(keyword, set()).update(kept)

    for keyword in ("PatientName", "OtherPatientNames", "ReferringPhysicianName", "OperatorsName"):
        value = ds.get(keyword)
        if value:
            put(keyword, (_normal(p) for p in re.split(r"[\^=\s,]+", str(value))))
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID"):
        value = ds.get(keyword)
        if value:
            put(keyword, (_normal(str(v)) for v in str(value).split("\\")))
    for keyword in ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate"):
        value = ds.get(keyword)
        if value:
            put(keyword, _dates(str(value)))
    value = ds.get("InstitutionName")
    if value:
        put("InstitutionName", (_normal(p) for p in str(value).split() if len(p) >= 4))
    return out


def _position(box: tuple[int, int, int, int], shape: tuple[int, int]) -> str:
    x, y, w, h = box
    cx, cy = (x + w / 2) / max(shape[1], 1), (y + h / 2) / max(shape[0], 1)
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    if row == "middle" and col == "centre":
        return "centre"
    return f"{row}-{col}"


def _isolate_bright(grey: np.ndarray) -> np.ndarray:
    """Dark text on white from the brightest pixels, where overlays are burned in.

    Overlays are drawn at or near full brightness; keeping only the brightest
    pixels removes speckle and anatomy that hide the glyphs from Tesseract. An
    image that is bright over a large area is returned as it is.
    """
    threshold = max(170.0, float(np.percentile(grey, 99.0)) - 30.0)
    mask = grey >= threshold
    if mask.mean() > 0.2:
        return grey
    return np.where(mask, 0, 255).astype(np.uint8)


def find_text(
    image: np.ndarray,
    *,
    identifiers: dict[str, set[str]] | None = None,
    frame: int = 0,
    min_confidence: float = MIN_CONFIDENCE,
) -> list[TextRegion]:
    """Lines of text Tesseract reads in an 8-bit grey or RGB image.

    Parameters
    ----------
    image : numpy.ndarray
        ``uint8``, ``(rows, columns)`` or ``(rows, columns, 3)``.
    identifiers : dict, optional
        From :func:`header_identifiers`; matched against each line.
    frame : int
        Frame number recorded in the regions.
    min_confidence : float
        Words below this confidence are ignored in lines that match no identifier.

    Returns
    -------
    list of TextRegion
        One per line with at least one confident word of two or more letters or
        digits; none for an image without text.
    """
    import pytesseract
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1).astype(np.uint8)
    scale = 1
    if max(arr.shape) < 1000:  # Tesseract reads small glyphs better when enlarged
        scale = 2
    picture = Image.fromarray(_isolate_bright(arr))
    if scale != 1:
        picture = picture.resize(
            (arr.shape[1] * scale, arr.shape[0] * scale), Image.Resampling.BICUBIC
        )
    data = pytesseract.image_to_data(
        picture, config="--psm 11", output_type=pytesseract.Output.DICT
    )
    lines: dict[tuple[int, int, int], list[int]] = {}
    for i, word in enumerate(data["text"]):
        if float(data["conf"][i]) < _FLOOR or len(_WORD.findall(str(word))) < 2:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(i)
    folded = {kw: {_fold(v) for v in values} for kw, values in (identifiers or {}).items()}
    regions: list[TextRegion] = []
    for idx in lines.values():
        words = [str(data["text"][i]) for i in idx]
        tokens = {_fold(_normal(w)) for w in words} - {""}
        joined = _fold(_normal("".join(words)))
        matches = tuple(
            sorted(
                kw
                for kw, values in folded.items()
                if tokens & values or any(len(v) >= 5 and v in joined for v in values)
            )
        )
        if not matches:
            # without a header value to confirm it, only confident words count as text
            idx = [i for i in idx if float(data["conf"][i]) >= min_confidence]
            words = [str(data["text"][i]) for i in idx]
        n_chars = sum(len(_WORD.findall(w)) for w in words)
        if n_chars < 3 or not idx:
            continue
        x0 = min(int(data["left"][i]) for i in idx) // scale
        y0 = min(int(data["top"][i]) for i in idx) // scale
        x1 = max(int(data["left"][i]) + int(data["width"][i]) for i in idx) // scale
        y1 = max(int(data["top"][i]) + int(data["height"][i]) for i in idx) // scale
        box = (x0, y0, x1 - x0, y1 - y0)
        if not matches and box[3] < _MIN_HEIGHT:
            continue  # specks read as characters are shorter than any legible glyph
        looks: list[str] = []
        if any(_DATE.match(w.strip(".,;:")) for w in words):
            looks.append("date")
        if any(_LONG_NUMBER.search(w) for w in words):
            looks.append("identifier")
        if any(sum(c.isalpha() for c in w) >= 3 for w in words):
            looks.append("words")
        regions.append(
            TextRegion(
                frame=frame,
                box=box,
                position=_position(box, (arr.shape[0], arr.shape[1])),
                confidence=round(float(np.mean([float(data["conf"][i]) for i in idx])), 1),
                n_characters=n_chars,
                matches=matches,
                looks_like=tuple(looks),
            )
        )
    return regions


def burned_in_findings(ds: Dataset, frames: np.ndarray, path: str) -> list[Finding]:
    """OCR findings of one image: one per line of text found, never the text.

    Parameters
    ----------
    ds : pydicom.Dataset
        The header (identifiers, Photometric Interpretation).
    frames : numpy.ndarray
        Decoded sample frames ``(n, rows, columns, samples)`` (first, middle, last).
    path : str
        Relative path for the findings.

    Returns
    -------
    list of Finding
        ``critical`` when a line matches a header identifier, ``major`` when it
        looks like a date or an identifier, ``minor`` for other text (labels,
        scale units) to review.
    """
    identifiers = header_identifiers(ds)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    numbers = sorted({0, n_frames // 2, n_frames - 1})[: len(frames)]
    out: list[Finding] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    other: list[TextRegion] = []
    for number, frame in zip(numbers, frames, strict=False):
        for region in find_text(to_display(frame, ds), identifiers=identifiers, frame=number):
            key = (region.position, region.matches)
            if key in seen:  # the same annotation on every frame is one finding
                continue
            seen.add(key)
            if region.matches:
                severity = Severity.CRITICAL
                found = "text matching " + ", ".join(region.matches)
            elif "date" in region.looks_like or "identifier" in region.looks_like:
                severity = Severity.MAJOR
                found = "text that looks like a " + " or ".join(
                    x for x in region.looks_like if x != "words"
                )
            else:
                other.append(region)
                continue
            x, y, w, h = region.box
            out.append(
                Finding(
                    CHECK,
                    severity,
                    path,
                    attribute("PixelData"),
                    f"burned-in {found} in the {region.position} of frame {region.frame} "
                    f"(x={x}, y={y}, {w}x{h} px, {region.n_characters} characters, "
                    f"OCR confidence {region.confidence:.0f}%); expected no text that "
                    "may identify the patient",
                    "no burned-in identifiers",
                    found,
                )
            )
    if other:
        # labels, units and scale text: one finding per file to review, not one per line
        places = ", ".join(sorted({r.position for r in other}))
        best = max(r.confidence for r in other)
        out.append(
            Finding(
                CHECK,
                Severity.MINOR,
                path,
                attribute("PixelData"),
                f"{len(other)} line(s) of burned-in text matching no header identifier "
                f"({places}; best OCR confidence {best:.0f}%); review that they cannot "
                "identify the patient",
                "no burned-in text",
                f"{len(other)} line(s) of other text",
            )
        )
    return out
