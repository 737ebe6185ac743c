"""NIST StRD linear least-squares datasets (public domain), bundled in tests/data/nist-strd/.

The copy is byte for byte the project's reference set (its README says where the files
come from); ``test_nist_files_are_intact`` checks every file against its SHA-256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

NIST_DIR = Path(__file__).resolve().parent / "data" / "nist-strd"
CERTIFIED = json.loads((NIST_DIR / "certified.json").read_text())["datasets"]
NAMES = sorted(CERTIFIED)


@dataclass(frozen=True)
class NistCase:
    name: str
    y: np.ndarray
    columns: dict[str, np.ndarray]
    model: dict
    estimates: list[Decimal]
    std_devs: list[Decimal]
    residual_sd: Decimal
    r_squared: Decimal


def load(name: str) -> NistCase:
    entry = CERTIFIED[name]
    lines = (NIST_DIR / entry["file"]).read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line.strip().startswith("Data:"))
    data = np.array([line.split() for line in lines[start + 1 :] if line.strip()], dtype=float)
    columns = {c: data[:, i] for i, c in enumerate(entry["data_columns"])}
    coefficients = entry["coefficients"]
    return NistCase(
        name=name,
        y=columns.pop("y"),
        columns=columns,
        model=entry["model"],
        estimates=[Decimal(c["estimate"]) for c in coefficients],
        std_devs=[Decimal(c["std_dev"]) for c in coefficients],
        residual_sd=Decimal(entry["residual_sd"]),
        r_squared=Decimal(entry["r_squared"]),
    )


def lre(estimate: float, reference: Decimal) -> float:
    """Log relative error (absolute when the reference is 0), capped at 15 as NIST does."""
    error = abs(Decimal(float(estimate)) - reference)
    if error == 0:
        return 15.0
    scale = abs(reference) if reference != 0 else Decimal(1)
    return float(min(Decimal(15), -(error / scale).log10()))
