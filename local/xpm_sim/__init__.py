"""The Xero + XPM simulator: a real HTTP server on loopback for tests, the demo and the benchmark.

sim = start_simulator()
sim.register_app("id", "secret")
sim.add_practice(generate_practice(seed=1))
# point XERO_LOGIN_URL, XERO_IDENTITY_URL and XERO_API_URL at sim.url
"""

from local.xpm_sim.control import Call, Fault, Faults, Limits
from local.xpm_sim.generate import PROBLEM_KINDS, abn_is_valid, generate_practice
from local.xpm_sim.identity import FULL_SCOPE
from local.xpm_sim.model import Practice, SimClient, SimContact, SimGroup, SimStaff
from local.xpm_sim.server import Simulator, start_simulator

__all__ = [
    "FULL_SCOPE",
    "PROBLEM_KINDS",
    "Call",
    "Fault",
    "Faults",
    "Limits",
    "Practice",
    "SimClient",
    "SimContact",
    "SimGroup",
    "SimStaff",
    "Simulator",
    "abn_is_valid",
    "generate_practice",
    "start_simulator",
]
