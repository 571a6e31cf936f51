"""DICOMweb (PS3.18): query and retrieve test sets from a PACS, store results back.

- :mod:`~workbench.dicomweb.connection`: server URL, credentials (environment or a
  0600 file), TLS, and one-line error messages;
- :mod:`~workbench.dicomweb.retrieve`: QIDO-RS queries and byte-for-byte,
  content-addressed, resumable WADO-RS retrieval;
- :mod:`~workbench.dicomweb.store`: idempotent STOW-RS.

The use cases that combine these with the records (import a test set, export a
run) are in :mod:`workbench.services.pacs`.
"""

from workbench.dicomweb.connection import (
    Credentials,
    DicomWebServer,
    describe_failure,
    load_credentials,
    public_url,
)
from workbench.dicomweb.retrieve import (
    InstanceRef,
    RetrievalOutcome,
    StudyRetrieval,
    list_study_instances,
    parse_query,
    retrieve_instances,
    retrieve_studies,
    search_studies,
)
from workbench.dicomweb.store import StoreOutcome, existing_instances, store_instances

__all__ = [
    "Credentials",
    "DicomWebServer",
    "InstanceRef",
    "RetrievalOutcome",
    "StoreOutcome",
    "StudyRetrieval",
    "describe_failure",
    "existing_instances",
    "list_study_instances",
    "load_credentials",
    "parse_query",
    "public_url",
    "retrieve_instances",
    "retrieve_studies",
    "search_studies",
    "store_instances",
]
