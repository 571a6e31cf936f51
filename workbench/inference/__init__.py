"""Inference layer: model specs and fingerprints, safe loading, device selection, the runner.

See ``docs/developer/contracts.md`` (section ``workbench.inference``). Typical use::

    spec = ModelSpec.from_json(spec_text)
    model = load_model(path, spec, expected_hashes=registered_hashes)
    summary = run_inference(cases_from_test_set(root), model, spec, out_dir=run_dir,
                            completed=already_done, on_case=persist)
"""

from workbench.inference.environment import (
    deterministic_mode,
    deterministic_settings,
    select_device,
    snapshot,
)
from workbench.inference.executor import InferenceExecutor, InProcessExecutor, SerialExecutor
from workbench.inference.loading import LoadedModel, load_model
from workbench.inference.registry import (
    InputSpec,
    ModelFormat,
    ModelSpec,
    ModelTask,
    ScoreActivation,
    hash_model_files,
    model_digest,
    verify_model_files,
)
from workbench.inference.runner import (
    CaseInput,
    CaseOutput,
    CaseProcessor,
    CaseStatus,
    InferenceSummary,
    cases_from_test_set,
    mask_sha256,
    run_inference,
    seg_uids,
)

__all__ = [
    "CaseInput",
    "CaseOutput",
    "CaseProcessor",
    "CaseStatus",
    "InProcessExecutor",
    "InferenceExecutor",
    "InferenceSummary",
    "InputSpec",
    "LoadedModel",
    "ModelFormat",
    "ModelSpec",
    "ModelTask",
    "ScoreActivation",
    "SerialExecutor",
    "cases_from_test_set",
    "deterministic_mode",
    "deterministic_settings",
    "hash_model_files",
    "load_model",
    "mask_sha256",
    "model_digest",
    "run_inference",
    "seg_uids",
    "select_device",
    "snapshot",
    "verify_model_files",
]
