"""DICOM layer: series -> volume, SEG I/O, indexing, lock manifests, synthetic test sets.

See ``docs/developer/contracts.md`` (section ``workbench.dicom``) for the
interfaces other packages rely on.
"""

from workbench.dicom.seg import build_seg_dataset, read_seg_mask, write_seg
from workbench.dicom.synth import Defect, InjectedDefect, SynthSummary, generate_test_set
from workbench.dicom.volume import Volume, load_series

__all__ = [
    "Defect",
    "InjectedDefect",
    "SynthSummary",
    "Volume",
    "build_seg_dataset",
    "generate_test_set",
    "load_series",
    "read_seg_mask",
    "write_seg",
]
