"""Validation protocols: schema, loading, endpoint evaluation and discrepancy rules.

A protocol is YAML under ``validation_protocols/``; :func:`load_protocol` validates
it (errors name the YAML line), :func:`evaluate_endpoints` applies it to one row
per case and :func:`find_discrepancies` selects the cases for adjudication.
"""

from workbench.protocols.discrepancies import Discrepancy, DiscrepancyCandidate, find_discrepancies
from workbench.protocols.evaluation import (
    CaseStatus,
    EndpointResult,
    ProtocolEvaluation,
    Verdict,
    evaluate_endpoints,
    stratum_labels,
)
from workbench.protocols.loading import diff_protocols, load_protocol, protocol_sha256
from workbench.protocols.metrics import METRICS, Metric, MetricInfo, Task, metric_info
from workbench.protocols.schema import (
    Adjudication,
    CIMethodSpec,
    Criterion,
    CriterionStatistic,
    DiscrepancyRule,
    Endpoint,
    FailedCasePolicy,
    Multiplicity,
    MultiplicityFamily,
    Operator,
    Protocol,
    ReferenceStandard,
    SegmentationReference,
    SegmentationReferenceRule,
    SignatureRequirement,
    SignerRole,
    StratumFactor,
    SubgroupAcceptance,
    SubgroupRule,
    TestSetRef,
    render_criterion,
)

__all__ = [
    "METRICS",
    "Adjudication",
    "CIMethodSpec",
    "CaseStatus",
    "Criterion",
    "CriterionStatistic",
    "Discrepancy",
    "DiscrepancyCandidate",
    "DiscrepancyRule",
    "Endpoint",
    "EndpointResult",
    "FailedCasePolicy",
    "Metric",
    "MetricInfo",
    "Multiplicity",
    "MultiplicityFamily",
    "Operator",
    "Protocol",
    "ProtocolEvaluation",
    "ReferenceStandard",
    "SegmentationReference",
    "SegmentationReferenceRule",
    "SignatureRequirement",
    "SignerRole",
    "StratumFactor",
    "SubgroupAcceptance",
    "SubgroupRule",
    "Task",
    "TestSetRef",
    "Verdict",
    "diff_protocols",
    "evaluate_endpoints",
    "find_discrepancies",
    "load_protocol",
    "metric_info",
    "protocol_sha256",
    "render_criterion",
    "stratum_labels",
]
