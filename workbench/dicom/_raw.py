"""A DICOM file's elements read straight from its bytes (PS3.10 7.1, PS3.5 7).

The file meta group, then every element of the data set, stepping over values by
their lengths and into sequences and encapsulated pixel data of undefined length.
This finds where each top-level value lies and proves that the declared lengths end
exactly at the end of the file, in a fraction of the time of a full parse. Encodings
it does not follow (deflated data sets, a missing preamble, unknown VRs, a data set
encoded otherwise than its file meta declares) raise :class:`NotWalked`, and the
caller leaves the file to pydicom; a length that runs past the end raises
:class:`Truncated`.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from struct import Struct

Buffer = bytes | mmap.mmap

UNDEFINED = 0xFFFFFFFF
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM "
    b"UC UI UL UN UR US UT UV".split()
)
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())  # PS3.5 7.1.2
UNDEFINED_LENGTH_VRS = frozenset(b"SQ UN OB OW".split())
#: Where pydicom's ``stop_before_pixels`` stops: (7FE0,0010), (7FE0,0008), (7FE0,0009).
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
MAX_DEPTH = 64


class Truncated(Exception):
    """A declared length runs past the end of the file: the file is incomplete."""


class NotWalked(Exception):
    """An encoding the fast reader leaves to pydicom."""


class Layout:
    """Struct formats of one byte order: explicit element header, 32-bit length, implicit one."""

    def __init__(self, endian: str) -> None:
        self.explicit = Struct(endian + "HH2sH")
        self.long = Struct(endian + "L")
        self.implicit = Struct(endian + "HHL")


LAYOUTS = {"<": Layout("<"), ">": Layout(">")}


def text(raw: bytes | None) -> str | None:
    """An ASCII value (a UID, a code string) without padding; None when empty."""
    if raw is None:
        return None
    value = raw.decode("ascii", "replace").rstrip("\x00").strip()
    return value or None


def skip_items(
    buf: Buffer, pos: int, explicit: bool, layout: Layout, depth: int, *, datasets: bool = True
) -> int:
    """Step over the items of a sequence (or pixel data fragments) of undefined length.

    Items of a sequence (``datasets``) are walked element by element, those of
    defined length too, and must end exactly where they say: pydicom parses the
    items of a sequence of undefined length as it reads the file, and a file
    whose items it cannot parse must not pass here. Fragments are stepped over.
    """
    end = len(buf)
    item_header = layout.implicit.unpack_from
    while True:
        if pos + 8 > end:
            raise Truncated("a sequence of undefined length has no delimiter")
        group, element, length = item_header(buf, pos)
        pos += 8
        if group != 0xFFFE or element not in (0xE000, 0xE0DD):
            raise NotWalked(f"({group:04X},{element:04X}) inside a sequence")
        if element == 0xE0DD:
            return pos
        if length == UNDEFINED:
            pos = walk_dataset(buf, pos, explicit, layout, None, depth, in_item=True)
        elif pos + length > end:
            raise Truncated(f"an item declares {length} bytes, {end - pos} remain")
        elif datasets:
            item_end = pos + length
            reached = walk_dataset(
                buf, pos, explicit, layout, None, depth, in_item=False, end=item_end
            )
            if reached != item_end:
                raise NotWalked("the elements of an item run past its end")
            pos = item_end
        else:
            pos += length


def walk_dataset(
    buf: Buffer,
    pos: int,
    explicit: bool,
    layout: Layout,
    found: dict[int, bytes] | None,
    depth: int,
    *,
    in_item: bool,
    wanted: frozenset[int] = frozenset(),
    elements: dict[int, tuple[bytes, int, int]] | None = None,
    end: int | None = None,
) -> int:
    """Step over the elements from ``pos`` to the end (or the item delimiter).

    Parameters
    ----------
    found : dict, optional
        Receives the values of the ``wanted`` tags of groups 0008 and 0020 at this level.
    elements : dict, optional
        Receives ``tag: (VR, value offset, value length)`` of every element at this
        level before the pixel data (``PIXEL_TAGS``), as pydicom's
        ``stop_before_pixels`` reads them; the VR is ``b""`` in implicit VR and the
        length ``UNDEFINED`` for a sequence of undefined length.
    end : int, optional
        Where the elements end (an item of defined length); the end of ``buf``
        by default. A length that runs past it raises :class:`NotWalked` (the
        item is malformed) rather than :class:`Truncated`.

    Returns
    -------
    int
        The position after the last element (after the item delimiter in an item).
    """
    if depth > MAX_DEPTH:
        raise NotWalked("sequences nested too deep")
    overrun: type[Exception] = Truncated if end is None else NotWalked
    end = len(buf) if end is None else end
    explicit_header, long_length = layout.explicit.unpack_from, layout.long.unpack_from
    implicit_header = layout.implicit.unpack_from
    long_vrs, vrs = LONG_VRS, VRS
    while pos < end:
        if pos + 8 > end:
            raise overrun(f"the element header at byte {pos} is cut off")
        if explicit:
            group, element, vr, length = explicit_header(buf, pos)
        else:
            group, element, length = implicit_header(buf, pos)
            vr = b""
        if group == 0xFFFE:  # item tags have no VR in any encoding
            if in_item and element == 0xE00D:
                return pos + 8
            raise NotWalked(f"(FFFE,{element:04X}) outside a sequence")
        if not explicit:
            pos += 8
        elif vr in long_vrs:
            if pos + 12 > end:
                raise overrun(f"the element header at byte {pos} is cut off")
            (length,) = long_length(buf, pos + 8)
            pos += 12
        elif vr in vrs:
            pos += 8
        else:
            raise NotWalked(f"unknown VR {vr!r}")
        if elements is not None:
            tag = group << 16 | element
            if tag in PIXEL_TAGS:
                elements = None  # pydicom stops before the pixel data; the walk goes on
            else:
                elements[tag] = (vr, pos, length)
        if length == UNDEFINED:
            if explicit and vr not in UNDEFINED_LENGTH_VRS:
                raise NotWalked(f"undefined length with VR {vr!r}")
            # UN of undefined length holds implicit VR little endian (PS3.5 6.2.2);
            # pydicom reads it in the data set's byte order, so big endian is left to it.
            unknown = vr == b"UN"
            if unknown and layout is not LAYOUTS["<"]:
                raise NotWalked("UN of undefined length in big endian")
            fragments = vr in (b"OB", b"OW") or (
                not explicit and (group << 16 | element) in PIXEL_TAGS
            )
            pos = skip_items(
                buf,
                pos,
                explicit and not unknown,
                LAYOUTS["<"] if unknown else layout,
                depth + 1,
                datasets=not fragments,
            )
            continue
        if pos + length > end:
            raise overrun(
                f"element ({group:04X},{element:04X}) declares {length} bytes, {end - pos} remain"
            )
        if found is not None and (group == 0x0008 or group == 0x0020):
            tag = group << 16 | element
            if tag in wanted:
                found[tag] = buf[pos : pos + length]
        pos += length
    if in_item:
        raise Truncated("an item of undefined length has no delimiter")
    return pos


def read_file_meta(buf: Buffer) -> tuple[dict[int, bytes], int]:
    """The file meta group's values by element number, and where the data set begins.

    Raises :class:`NotWalked` for a file without the DICM prefix or with a file meta
    group the reader does not follow, :class:`Truncated` for one cut short.
    """
    end = len(buf)
    if end < 132 or buf[128:132] != b"DICM":
        raise NotWalked("no DICM prefix")
    pos = 132
    meta: dict[int, bytes] = {}
    header, long_length = LAYOUTS["<"].explicit.unpack_from, LAYOUTS["<"].long.unpack_from
    while pos + 8 <= end:
        group, element, vr, length = header(buf, pos)
        if group != 0x0002:
            break
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise Truncated("the file meta information is cut off")
            (length,) = long_length(buf, pos + 8)
            pos += 12
        elif vr in VRS:
            pos += 8
        else:
            raise NotWalked(f"unknown VR {vr!r} in the file meta information")
        if length == UNDEFINED:
            raise NotWalked("undefined length in the file meta information")
        if pos + length > end:
            raise Truncated("the file meta information is cut off")
        meta[element] = buf[pos : pos + length]
        pos += length
    return meta, pos


def data_set_encoding(buf: Buffer, meta: dict[int, bytes], pos: int) -> tuple[str, bool, Layout]:
    """The transfer syntax, whether VR is explicit, and the byte order of the data set.

    Raises :class:`NotWalked` for a missing transfer syntax, a deflated data set, or
    a data set that is not encoded as its file meta declares (pydicom recognises the
    actual encoding).
    """
    transfer_syntax = text(meta.get(0x0010))
    if not transfer_syntax or transfer_syntax in DEFLATED:
        raise NotWalked("no transfer syntax, or a deflated data set")
    explicit = transfer_syntax != IMPLICIT_VR_LE
    # pydicom's test: a VR is two upper-case letters.
    if pos + 8 <= len(buf) and (0x40 < buf[pos + 4] < 0x5B and 0x40 < buf[pos + 5] < 0x5B) != (
        explicit
    ):
        raise NotWalked("the data set is not encoded as declared")
    return transfer_syntax, explicit, LAYOUTS[">" if transfer_syntax == EXPLICIT_VR_BE else "<"]


@dataclass(frozen=True, slots=True)
class RawHeader:
    """Where the top-level values of a complete DICOM file lie.

    Attributes
    ----------
    meta : dict of int to bytes
        File meta values by element number (group 0002).
    transfer_syntax : str
    explicit : bool
        Explicit VR.
    little : bool
        Little endian.
    elements : dict
        ``tag: (VR, value offset, value length)`` of the data set's elements before
        the pixel data (VR ``b""`` in implicit VR; length ``UNDEFINED`` for a
        sequence of undefined length).
    """

    meta: dict[int, bytes]
    transfer_syntax: str
    explicit: bool
    little: bool
    elements: dict[int, tuple[bytes, int, int]]


def read_header(buf: Buffer) -> RawHeader:
    """Walk a whole DICOM file (Part 10, with preamble) and locate its top-level values.

    Raises :class:`Truncated` (a length runs past the end: the file is incomplete)
    or :class:`NotWalked` (an encoding left to pydicom; a data set without elements).
    """
    meta, pos = read_file_meta(buf)
    transfer_syntax, explicit, layout = data_set_encoding(buf, meta, pos)
    elements: dict[int, tuple[bytes, int, int]] = {}
    walk_dataset(buf, pos, explicit, layout, None, 0, in_item=False, elements=elements)
    if not elements:
        raise NotWalked("no data elements before the pixel data")
    return RawHeader(
        meta=meta,
        transfer_syntax=transfer_syntax,
        explicit=explicit,
        little=layout is LAYOUTS["<"],
        elements=elements,
    )
