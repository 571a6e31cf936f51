"""Reader studies: pre-registered multi-reader multi-case designs and their analysis.

:func:`load_study_design` validates a ``kind: reader_study`` YAML design;
:func:`analyze_ratings` runs the Obuchowski-Rockette analysis of the readers'
ratings against the design's hypothesis and margin. Reading sessions, ratings
and signatures live in :mod:`workbench.services.studies`.
"""

from workbench.studies.analysis import ReaderAuc, StudyAnalysis, analyze_ratings
from workbench.studies.design import (
    Arm,
    Hypothesis,
    RatingScale,
    ReaderStudyDesign,
    StudyDesignKind,
    load_study_design,
)

__all__ = [
    "Arm",
    "Hypothesis",
    "RatingScale",
    "ReaderAuc",
    "ReaderStudyDesign",
    "StudyAnalysis",
    "StudyDesignKind",
    "analyze_ratings",
    "load_study_design",
]
