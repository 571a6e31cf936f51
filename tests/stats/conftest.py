"""Fixtures of the statistics tests: the reference data sets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


@pytest.fixture(scope="session")
def asah() -> pd.DataFrame:
    frame = pd.read_csv(REFERENCE / "asah.csv")
    frame["y"] = (frame["outcome"] == "Poor").astype(int)
    return frame


@pytest.fixture(scope="session")
def anxiety() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "irr_anxiety.csv")


@pytest.fixture(scope="session")
def diagnoses_counts() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "fleiss_diagnoses_counts.csv")


@pytest.fixture(scope="session")
def auditc() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "auditc.csv")


@pytest.fixture(scope="session")
def vandyke() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "vandyke_long.csv")
