"""Reader studies: pre-registered multi-reader multi-case designs and their analysis.

:func:`load_study_design` validates a ``kind: reader_study`` YAML design;
:func:`analyze_ratings` runs the Obuchowski-Rockette analysis of the readers'
ratings against the design's hypothesis and margin; :func:`analyze_marks` that of
the wAFROC figure of merit of their lesion marks in a detection study. Reading sessions, ratings
and signatures live in :mod:`workbench.services.studies`.
"""

from workbench.studies.analysis import (
    ReaderAuc,
    StudyAnalysis,
    analyze_marks,
    analyze_ratings,
    empirical_roc,
    free_response_truth,
    match_reader_marks,
)
from workbench.studies.design import (
    Arm,
    DetectionReading,
    Hypothesis,
    PrimaryEndpoint,
    RatingScale,
    ReaderStudyDesign,
    SimulatedReading,
    StudyDesignKind,
    load_study_design,
)
from workbench.studies.simulation import simulate_ratings

__all__ = [
    "Arm",
    "DetectionReading",
    "Hypothesis",
    "PrimaryEndpoint",
    "RatingScale",
    "ReaderAuc",
    "ReaderStudyDesign",
    "SimulatedReading",
    "StudyAnalysis",
    "StudyDesignKind",
    "analyze_marks",
    "analyze_ratings",
    "empirical_roc",
    "free_response_truth",
    "load_study_design",
    "match_reader_marks",
    "simulate_ratings",
]
