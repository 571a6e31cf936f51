"""Reader-study planning: readers and cases for a target power, before the study starts.

:func:`plan_study` takes the Obuchowski-Rockette variance components of a pilot,
either a finished reader study of this workbench (its signed ratings are
analysed) or a components file (OR or DBM components from a published or
external analysis), and returns, for each candidate number of readers, the
smallest number of cases that gives the target power
(:func:`workbench.stats.mrmc_sample_size`, after Hillis, Obuchowski & Berbaum 2011).

Planning needs the permission to analyse studies (``study.view``: QA and
auditors). Each plan is written to the audit trail (``study.plan``) with its
inputs, the pilot (a study reference, or the file's SHA-256), the variance
components and the resulting table, so that the sample-size justification of a
study can be traced to its pilot.

A components file is YAML (or JSON) with the pilot's number of cases and either
the OR components::

    n_cases: 114                 # K*, the pilot's cases
    n_readers: 5                 # optional
    var_tr: 0.00020040252        # modality-by-reader variance
    var: 0.00080228827
    cov1: 0.00034661371
    cov2: 0.00034407483
    cov3: 0.00023902837
    source: Van Dyke et al. 1993  # optional

or the DBM pseudovalue components under ``dbm:`` (``var_tr, var_c, var_tc, var_rc,
var_err``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import StatisticsError, WorkflowError
from workbench.records import audit
from workbench.services.context import Actor, Workbench, current_user
from workbench.stats import (
    MrmcSampleSize,
    MrmcVarianceComponents,
    mrmc_sample_size,
    variance_components_from_result,
)

__all__ = ["StudyPlan", "load_components_file", "plan_study"]

#: Largest components file accepted.
MAX_COMPONENTS_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class StudyPlan:
    """A readers-by-cases plan and where its variance components come from.

    Parameters
    ----------
    pilot : str
        ``id@version`` of the pilot reader study, or the components file's path.
    pilot_kind : str
        ``"study"`` or ``"file"``.
    pilot_sha256 : str or None
        SHA-256 of the components file (None for a study).
    table : MrmcSampleSize
        One row per candidate number of readers, with the components it rests on.
    """

    pilot: str
    pilot_kind: str
    pilot_sha256: str | None
    table: MrmcSampleSize

    def to_dict(self) -> dict[str, Any]:
        """Plain values: the pilot and the table (as the audit entry records them)."""
        return {
            "pilot": self.pilot,
            "pilot_kind": self.pilot_kind,
            "pilot_sha256": self.pilot_sha256,
            **self.table.to_dict(),
        }


def load_components_file(path: str | Path) -> tuple[MrmcVarianceComponents, str]:
    """Read a components file; return the components and the file's SHA-256.

    Raises
    ------
    FileNotFoundError
        No such file.
    StatisticsError
        Too large, not YAML/JSON, or keys missing or wrong; the message names the file.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"Components file {file} does not exist.")
    size = file.stat().st_size
    if size > MAX_COMPONENTS_BYTES:
        raise StatisticsError(
            f"{file}: {size} bytes; a components file holds a few numbers "
            f"(at most {MAX_COMPONENTS_BYTES} bytes)."
        )
    data = file.read_bytes()
    try:
        parsed = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise StatisticsError(f"{file}: not valid YAML or JSON ({error}).") from None
    components = MrmcVarianceComponents.from_dict(parsed, where=str(file))
    return components, hashlib.sha256(data).hexdigest()


def _pilot_components(wb: Workbench, actor: Actor, ref: str) -> MrmcVarianceComponents:
    # The pilot's signed ratings go through the study's own analysis (audited as
    # study.analyze), so the components are those the study reports.
    from workbench.services.studies import analyze_study

    analysis = analyze_study(wb, actor, ref)
    return variance_components_from_result(
        analysis.rrrc,
        observed_effect=analysis.difference.value,
        source=f"reader study {analysis.study} ({analysis.arms[1]} minus {analysis.arms[0]})",
    )


def plan_study(
    wb: Workbench,
    actor: Actor,
    *,
    pilot: str | None = None,
    components: str | Path | None = None,
    effect_size: float,
    power: float = 0.8,
    alpha: float = 0.05,
    readers: Iterable[int] = (4, 6, 8, 10),
    analysis: str = "RRRC",
    hypothesis: str = "difference",
    margin: float = 0.0,
    max_cases: int = 2000,
) -> StudyPlan:
    """Cases needed for each candidate number of readers, from a pilot (``study.view``).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
    pilot : str, optional
        ``id@version`` of a reader study whose readings are all signed.
    components : str or Path, optional
        A components file (see the module docstring). Exactly one of ``pilot`` and
        ``components``.
    effect_size : float
        Anticipated difference of reader-averaged AUCs (second arm minus first).
    power : float
        Target power.
    alpha : float
        Significance level (two-sided; see :func:`workbench.stats.mrmc_power`).
    readers : iterable of int
        Candidate numbers of readers.
    analysis : {"RRRC", "FRRC", "RRFC"}
        The OR generalisation the study will be analysed with (random readers and cases
        by default).
    hypothesis : {"difference", "superiority", "non_inferiority"}
        ``difference`` is the two-sided F test of equal AUCs; ``superiority`` and
        ``non_inferiority`` are the acceptance criteria of a study design (lower CI
        limit above 0, or above ``-margin``).
    margin : float
        Non-inferiority margin.
    max_cases : int
        Largest number of cases searched.

    Returns
    -------
    StudyPlan

    Raises
    ------
    PermissionDeniedError
        The actor may not analyse studies.
    WorkflowError
        Neither or both of ``pilot`` and ``components``; the pilot study is not
        completely read and signed.
    StatisticsError
        Bad planning input or components file (named with what was found).
    """
    if (pilot is None) == (components is None):
        raise WorkflowError(
            "Give the pilot's variance components one way: a finished reader study "
            "(pilot=id@version) or a components file (components=FILE), not "
            f"{'both' if pilot is not None else 'neither'}."
        )
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "study.view")
    sha256: str | None = None
    if pilot is not None:
        vc = _pilot_components(wb, actor, pilot)
        label, kind = pilot, "study"
    else:
        assert components is not None
        vc, sha256 = load_components_file(components)
        label, kind = str(components), "file"
    table = mrmc_sample_size(
        vc,
        effect_size=effect_size,
        power=power,
        readers=readers,
        alpha=alpha,
        analysis=analysis,
        hypothesis=hypothesis,
        margin=margin,
        max_cases=max_cases,
    )
    plan = StudyPlan(pilot=label, pilot_kind=kind, pilot_sha256=sha256, table=table)
    with wb.transaction() as session:
        user = current_user(session, actor, "study.view")
        audit.append(
            session,
            actor=user.username,
            action="study.plan",
            record_type="reader_study" if kind == "study" else "variance_components",
            record_id=label if kind == "study" else sha256,
            new=plan.to_dict(),
        )
    return plan
