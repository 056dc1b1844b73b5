"""Hypothesis profiles for the whole suite (docs/testing.md).

"ci" (the default, and what CI runs): derandomized, so a run draws the same examples every
time and a failure in CI is a failure on every machine, and no example database, so nothing
from an earlier run changes what is drawn. "explore": fresh random examples (500 where a test
sets no max_examples of its own), with the database kept to replay what failed - for hunting,
not for gating:

    HYPOTHESIS_PROFILE=explore python3 -m pytest -q tests/unit
    python3 -m pytest -q tests/unit --hypothesis-profile=explore    (the same)

A test's own @settings(max_examples=..., deadline=...) still applies on top of either.
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=500, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
