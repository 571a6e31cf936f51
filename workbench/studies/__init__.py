"""Reader studies: pre-registered multi-reader multi-case designs and their analysis.

:func:`load_study_design` validates a ``kind: reader_study`` YAML design;
:func:`analyze_ratings` runs the Obuchowski-Rockette analysis of the readers'
ratings against the design's hypothesis and margin. Reading sessions, ratings
and signatures live in :mod:`workbench.services.studies`.
"""

from workbench.studies.analysis import ReaderAuc, StudyAnalysis, analyze_ratings, empirical_roc
from workbench.studies.design import (
    Arm,
    Hypothesis,
    RatingScale,
    ReaderStudyDesign,
    SimulatedReading,
    StudyDesignKind,
    load_study_design,
)
from workbench.studies.simulation import simulate_ratings

__all__ = [
    "Arm",
    "Hypothesis",
    "RatingScale",
    "ReaderAuc",
    "ReaderStudyDesign",
    "SimulatedReading",
    "StudyAnalysis",
    "StudyDesignKind",
    "analyze_ratings",
    "empirical_roc",
    "load_study_design",
    "simulate_ratings",
]
