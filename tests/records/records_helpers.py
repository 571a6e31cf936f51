"""Constants shared by the records tests (kept out of conftest.py so tests can import them)."""

PASSWORD = "Correct-Horse-42"
OTHER_PASSWORD = "Battery-Staple-77"
