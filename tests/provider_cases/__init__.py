"""The vendor cases the shared contract suite (tests/test_provider_contract.py) runs against.

Adding a vendor: write tests/provider_cases/<vendor>.py with its `CASE` (case.py says what a case
supplies; the existing vendors are examples) and add it to CASES below.
"""

from __future__ import annotations

from tests.provider_cases import (
    aihubmax,
    eachlabs,
    fal,
    kling,
    novita,
    pixeldojo,
    replicate,
    segmind,
)
from tests.provider_cases.case import VendorCase

CASES: tuple[VendorCase, ...] = (
    pixeldojo.CASE,
    aihubmax.CASE,
    eachlabs.CASE,
    novita.CASE,
    segmind.CASE,
    fal.CASE,
    replicate.CASE,
    kling.CASE,
)
