"""Benchmark: a PACS round trip against a local Orthanc (DICOMweb, PS3.18).

(a) Import of a 60-study test set from Orthanc (QIDO-RS counts of the studies, WADO-RS
    retrieval byte for byte on two threads, the files written by one writing thread and
    indexed by two processes while the next studies arrive, then the records of a folder
    import)
    against ``cp -r`` of the same files out of Orthanc's storage folder. Both are timed
    until their files are on disk (``sync``), in alternating rounds (``--rounds``,
    median reported): with Orthanc's files in the page cache (warm), and, where the
    page cache may be dropped (``/proc/sys/vm/drop_caches``, as root), with it dropped
    before each copy and each import (cold: the files come from disk, as a PACS's
    would). Target: import / cp <= 2. The last import's phases are timed from its
    progress reports (listing until the first count answers, retrieval with the
    indexing alongside, records, sync), with the CPU seconds Orthanc spent in each and
    in all (the server's own share, which alone bounds the ratio from below); then the
    study-level intake alone
    (:func:`~workbench.dicomweb.retrieve.retrieve_studies`: the count queries and one
    WADO-RS request per study, no instance-level QIDO-RS) into a fresh folder, and
    once more over its own result (a resumed retrieval that finds everything there).
(c) The same import over DIMSE (C-FIND, C-GET: ``import_from_dimse``), once, warm, for
    comparison (no target).
(b) Export throughput: building each case's SEG (re-identified for the run) and TID 1500
    SR and storing them with STOW-RS (after the QIDO-RS check for what is there), in
    instances per second; then the same export again (nothing to send: idempotent).

Usage::

    python benchmarks/bench_dicomweb.py               # 60 studies of 128 x 128 x 40
    python benchmarks/bench_dicomweb.py --cases 20 --rounds 5

Needs Orthanc and its DICOMweb plugin (``apt-get install orthanc orthanc-dicomweb``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom
import requests

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "orthanc_test_server.sh"
os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from workbench.dicom.synth import generate_test_set  # noqa: E402
from workbench.dicom.volume import sort_slices  # noqa: E402
from workbench.dicomweb import Credentials, DicomWebServer, store_instances  # noqa: E402
from workbench.dicomweb.dimse import DimseNode  # noqa: E402
from workbench.dicomweb.retrieve import retrieve_studies  # noqa: E402
from workbench.services import accounts  # noqa: E402
from workbench.services.context import Workbench  # noqa: E402
from workbench.services.pacs import (  # noqa: E402
    export_uid,
    import_from_dicomweb,
    import_from_dimse,
)


def start_orthanc(state: Path) -> dict[str, str]:
    done = subprocess.run(
        ["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        sys.exit(f"Orthanc did not start: {done.stderr.strip()}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def upload(env: dict[str, str], files: list[Path]) -> None:
    rest = env["WORKBENCH_TEST_ORTHANC_URL"].rsplit("/dicom-web", 1)[0]
    with requests.Session() as session:
        session.auth = (env["WORKBENCH_TEST_ORTHANC_USER"], env["WORKBENCH_TEST_ORTHANC_PASSWORD"])
        for path in files:
            session.post(f"{rest}/instances", data=path.read_bytes(), timeout=60).raise_for_status()


def orthanc_cpu(state: Path) -> float:
    """CPU seconds (user + system) Orthanc has used so far; 0.0 where /proc is unavailable."""
    try:
        pid = int((state / "orthanc.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class PhaseClock:
    """Times the phases of an import from its progress reports, with Orthanc's CPU seconds."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.marks: list[tuple[str, float, float]] = []

    def mark(self, phase: str) -> None:
        if not self.marks or self.marks[-1][0] != phase:
            self.marks.append((phase, time.perf_counter(), orthanc_cpu(self.state)))

    def progress(self, done: int, total: int, message: str) -> None:
        self.mark("indexing and records" if message.startswith("index") else "retrieval")

    def server_cpu(self) -> float:
        """Orthanc's CPU seconds from the first mark to the last."""
        return self.marks[-1][2] - self.marks[0][2] if self.marks else 0.0

    def lines(self) -> list[str]:
        out = []
        for (phase, start, cpu), (_, end, cpu_end) in itertools.pairwise(self.marks):
            out.append(f"{phase} {end - start:.2f} s (Orthanc CPU {cpu_end - cpu:.2f} s)")
        return out


def copy_storage(storage: Path, target: Path) -> float:
    """Seconds for ``cp -r`` of Orthanc's attachment folders (not its index database)."""
    folders = sorted(str(p) for p in storage.iterdir() if p.is_dir() and len(p.name) == 2)
    target.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(["cp", "-r", *folders, str(target)], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def drop_caches() -> bool:
    """Write dirty pages out and drop the page cache; False where that is not permitted."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def import_once(
    folder: Path,
    server: DicomWebServer | DimseNode,
    studies: list[str],
    synth: Path,
    state: Path,
) -> tuple[float, Any, PhaseClock]:
    """Seconds for one import into a fresh workbench, until its files are on disk (``sync``).

    Over DICOMweb, or over DIMSE (C-FIND, C-GET) when ``server`` is a :class:`DimseNode`.
    """
    importer: Any = import_from_dimse if isinstance(server, DimseNode) else import_from_dicomweb
    wb = Workbench.open(folder)
    try:
        accounts.bootstrap_admin(
            wb, username="admin", full_name="Ada Admin", password="Harbor-Lamp-2026!"
        )
        admin = accounts.login(wb, "admin", "Harbor-Lamp-2026!")
        accounts.create_user(
            wb,
            admin,
            username="qa1",
            full_name="Quinn Avery",
            role="qa",
            password="Quill-Maple-2026!",
            must_change_password=False,
        )
        qa = accounts.login(wb, "qa1", "Quill-Maple-2026!")
        clock = PhaseClock(state)
        clock.mark("listing (QIDO-RS)")
        start = time.perf_counter()
        done = importer(
            wb,
            qa,
            server,
            name="bench",
            studies=studies,
            reference=synth,
            workers=2,
            progress=clock.progress,
        )
        clock.mark("sync")
        subprocess.run(["sync"], check=True)
        seconds = time.perf_counter() - start
        clock.mark("end")
    finally:
        wb.close()
    return seconds, done, clock


def export_objects(root: Path, run_uid: str) -> list[pydicom.Dataset]:
    """Per case: its reader SEG re-identified for the run, and the TID 1500 SR."""
    from workbench.dicom.sr import build_measurement_report, segment_volumes

    datasets = []
    when = dt.datetime(2026, 1, 1, 12, 0, 0)
    for case in sorted((root / "cases").iterdir()):
        ct = sorted((case / "CT").glob("*.dcm"))
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct]
        order, _, _ = sort_slices(headers, [str(p) for p in ct])
        headers = [headers[i] for i in order]
        seg = pydicom.dcmread(sorted(case.rglob("SEG/*.dcm"))[0])
        seg.SOPInstanceUID = export_uid(run_uid, case.name, "seg")
        seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
        seg.SeriesInstanceUID = export_uid(run_uid, case.name, "seg-series")
        sr = build_measurement_report(
            headers,
            seg=seg,
            volumes=segment_volumes(seg),
            score=0.5,
            score_name="malignancy",
            model_name="bench-model",
            model_version="1.0",
            run_uid=run_uid,
            device_uid=export_uid(run_uid, None, "device"),
            series_instance_uid=export_uid(run_uid, case.name, "sr-series"),
            sop_instance_uid=export_uid(run_uid, case.name, "sr"),
            content_datetime=when,
        )
        datasets += [seg, sr]
    return datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp:
        base = Path(tmp)
        synth = base / "synth"
        generate_test_set(synth, n_cases=args.cases, seed=5, matrix=128, slices=(40, 40))
        files = sorted(synth.rglob("*.dcm"))
        state = base / "orthanc"
        env = start_orthanc(state)
        try:
            upload(env, files)
            studies = sorted(
                {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in files}
            )
            size_mb = sum(p.stat().st_size for p in files) / 1e6
            server = DicomWebServer(
                env["WORKBENCH_TEST_ORTHANC_URL"],
                credentials=Credentials(
                    user=env["WORKBENCH_TEST_ORTHANC_USER"],
                    password=env["WORKBENCH_TEST_ORTHANC_PASSWORD"],
                ),
            )
            subprocess.run(["sync"], check=True)  # Orthanc's own writes are not the copy's
            series: dict[str, list[tuple[float, float]]] = {}
            for kind in ("warm", "cold"):  # cold only where the page cache may be dropped
                if kind == "cold" and not drop_caches():
                    break
                rounds = series.setdefault(kind, [])
                for k in range(args.rounds):  # alternating, so both see the same machine
                    if kind == "cold":
                        drop_caches()
                    cp_s = copy_storage(state / "storage", base / f"cp-{kind}-{k}")
                    if kind == "cold":
                        drop_caches()
                    import_s, done, clock = import_once(
                        base / f"wb-{kind}-{k}", server, studies, synth, state
                    )
                    rounds.append((cp_s, import_s))
            node = DimseNode.parse(env["WORKBENCH_TEST_ORTHANC_DIMSE"])
            dimse_s, dimse_done, _ = import_once(base / "wb-dimse", node, studies, synth, state)
            intake = base / "intake"
            cpu = orthanc_cpu(state)
            start = time.perf_counter()
            fresh = retrieve_studies(server, studies, intake, workers=2)
            intake_s, intake_cpu = time.perf_counter() - start, orthanc_cpu(state) - cpu
            start = time.perf_counter()
            resumed = retrieve_studies(server, studies, intake, workers=2)
            resumed_s = time.perf_counter() - start
            objects = export_objects(synth, "BENCH-RUN-1")
            start = time.perf_counter()
            first = store_instances(server, objects)
            export_s = time.perf_counter() - start
            start = time.perf_counter()
            again = store_instances(server, objects)
            again_s = time.perf_counter() - start
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True)
    print(f"studies {len(studies)}, instances {len(files)}, {size_mb:.0f} MB")
    print(
        f"(a) {args.rounds} rounds, each cp -r of Orthanc's storage then an import into a "
        "fresh workbench, both until the files are on disk (sync); warm: Orthanc's files in "
        "the page cache; cold: page cache dropped before each copy and each import"
    )
    for kind, rounds in series.items():
        for k, (cp_s, import_s) in enumerate(rounds, start=1):
            print(
                f"    {kind} round {k}: cp -r {cp_s:.2f} s, import {import_s:.2f} s, "
                f"{import_s / cp_s:.2f}x"
            )
        cp_med = statistics.median(c for c, _ in rounds)
        import_med = statistics.median(i for _, i in rounds)
        print(
            f"    {kind} median: cp -r {cp_med:.2f} s, import over DICOMweb (retrieve + index, "
            f"{done.n_fetched} instances) {import_med:.2f} s  ratio {import_med / cp_med:.2f}x "
            "(target <= 2x)"
        )
    cp_med = statistics.median(c for c, _ in series["warm"])
    print("    phases of the last import: " + "; ".join(clock.lines()))
    print(
        f"    Orthanc's own CPU time serving the last import: {clock.server_cpu():.2f} s, "
        f"{clock.server_cpu() / cp_med:.2f}x the warm cp -r (a floor for the warm ratio on "
        "this machine, whatever the client does)"
    )
    print(
        f"    study-level intake alone (retrieve_studies, {fresh.outcome.n_fetched} instances): "
        f"{intake_s:.2f} s (Orthanc CPU {intake_cpu:.2f} s)  ratio {intake_s / cp_med:.2f}x; "
        f"again with everything there ({resumed.outcome.n_skipped} verified): {resumed_s:.2f} s"
    )
    print(
        f"    the same import over DIMSE (C-FIND listing, one C-GET per study, "
        f"{dimse_done.n_fetched} instances), warm: {dimse_s:.2f} s, "
        f"{dimse_s / cp_med:.2f}x the warm cp -r (no target; for comparison)"
    )
    print(
        f"(b) export (QIDO check + STOW-RS) of {len(first.stored)} SEG + SR: {export_s:.2f} s, "
        f"{len(first.stored) / export_s:.1f} instances/s"
    )
    print(
        f"    repeated export: {len(again.stored)} sent, {len(again.already_present)} already "
        f"there, {again_s:.2f} s"
    )


if __name__ == "__main__":
    main()
