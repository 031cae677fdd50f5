"""A simulator of the Datto RMM API v2: `DattoSimulator(seed=0)`, served in-process or on loopback.

See `app` for what it enforces, `data` for the generated estate, `quota` for the rate limit.
"""

from psabridge.plugins.rmm_datto.simulator.app import DattoSimulator, ManualClock, SimOptions
from psabridge.plugins.rmm_datto.simulator.data import generate_estate
from psabridge.plugins.rmm_datto.simulator.quota import Quotas

__all__ = ["DattoSimulator", "ManualClock", "Quotas", "SimOptions", "generate_estate"]
