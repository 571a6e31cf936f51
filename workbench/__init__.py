"""Validation Workbench: validate medical-imaging AI models on locked DICOM test sets."""

__all__ = ["__version__"]

__version__ = "0.1.0"
