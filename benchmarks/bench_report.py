"""Benchmark: build (and seal) the validation report of a 1,000-case run.

The per-case table is not printed in the PDF: a reviewer reads the excluded,
failed and discrepant cases in the body, and the full table (all rows) is the
embedded ``per-case.csv``. Usage::

    .venv/bin/python benchmarks/bench_report.py [--cases 1000] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from workbench.reports import build_report, ensure_signing_identity, seal_pdf, verify_pdf

ROOT = Path(__file__).resolve().parents[1]


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "report_fixtures", ROOT / "tests" / "reports" / "report_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    content = _fixtures().make_report_content(args.cases, signed=True)
    synth_s = time.perf_counter() - start

    start = time.perf_counter()
    built = build_report(content, args.out / "bench-report.pdf")
    build_s = time.perf_counter() - start

    identity = ensure_signing_identity(args.out / "keys")
    start = time.perf_counter()
    seal_pdf(built.path, args.out / "bench-report.sealed.pdf", identity, reason="benchmark")
    seal_s = time.perf_counter() - start
    start = time.perf_counter()
    check = verify_pdf(args.out / "bench-report.sealed.pdf", trust_roots=identity.trust_roots)
    verify_s = time.perf_counter() - start

    size_kib = built.path.stat().st_size / 1024
    print(f"cases={args.cases} synthetic_content_s={synth_s:.2f}")
    print(f"build_s={build_s:.2f} pages={built.pages} size_kib={size_kib:.0f}")
    print(f"seal_s={seal_s:.2f} verify_s={verify_s:.2f} valid={check.valid}")


if __name__ == "__main__":
    main()
