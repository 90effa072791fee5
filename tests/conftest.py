"""Fixtures shared by the IRSA client and emulator tests."""

import pytest

from spxflow.archive.emulator import running_emulator
from spxflow.archive.simulated import SimulatedArchive


@pytest.fixture(scope="module")
def sim():
    """The default simulated archive (what the emulator serves)."""
    return SimulatedArchive()


@pytest.fixture(scope="module")
def emulator(sim):
    """Base URL of a fault-free loopback emulator serving ``sim`` for one test module."""
    with running_emulator(sim) as url:
        yield url
