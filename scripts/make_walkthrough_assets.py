#!/usr/bin/env python3
"""Render pages of a demo validation report to PNG for the user documentation.

Usage (after ``workbench demo --workdir DIR``)::

    .venv/bin/python scripts/make_walkthrough_assets.py --workdir DIR [--pages 1 2] [--dpi 80]

Takes the newest sealed report of the workdir (or ``--report FILE.pdf``), renders the
requested pages with ``pdftoppm`` (poppler-utils) and writes
``docs/images/report-page-<n>.png``. Screenshots of the app are made by the app's
browser test into ``docs/screenshots/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
IMAGES = REPOSITORY / "docs" / "images"


def newest_sealed_report(workdir: Path) -> Path:
    """The sealed PDF of the newest sealed report in ``workdir``."""
    sys.path.insert(0, str(REPOSITORY))
    from workbench.services import Workbench, reports

    wb = Workbench.open(workdir)
    try:
        sealed = [r for r in reports.list_reports(wb) if r.status == "sealed" and r.sealed_path]
    finally:
        wb.close()
    if not sealed:
        raise SystemExit(
            f"No sealed report in {workdir}; run `workbench demo --workdir {workdir}` first."
        )
    return Path(sealed[0].sealed_path)


def render_page(pdf: Path, page: int, out: Path, *, dpi: int) -> Path:
    """Render one page of ``pdf`` to ``out`` (PNG) with pdftoppm."""
    if shutil.which("pdftoppm") is None:
        raise SystemExit("pdftoppm not found: install poppler-utils.")
    with tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / "page"
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                str(dpi),
                "-f",
                str(page),
                "-l",
                str(page),
                "-singlefile",
                str(pdf),
                str(stem),
            ],
            check=True,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stem.with_suffix(".png")), out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="demo workdir (workbench demo --workdir)")
    parser.add_argument("--report", type=Path, help="a report PDF instead of the newest sealed one")
    parser.add_argument("--pages", type=int, nargs="+", default=[1], help="pages to render")
    parser.add_argument("--dpi", type=int, default=80, help="resolution (default 80)")
    parser.add_argument("--out", type=Path, default=IMAGES, help="output folder")
    args = parser.parse_args(argv)
    if args.report is None and args.workdir is None:
        parser.error("give --workdir DIR or --report FILE.pdf")
    pdf = args.report or newest_sealed_report(args.workdir)
    for page in args.pages:
        out = render_page(pdf, page, args.out / f"report-page-{page}.png", dpi=args.dpi)
        print(f"{pdf.name} page {page} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
