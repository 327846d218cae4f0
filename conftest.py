"""Repository-wide pytest setup: notebooks run with small settings under the test suite."""

import os

os.environ.setdefault("AEVB_SMALL", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
