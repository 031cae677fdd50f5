"""The connector conformance kit: pytest checks that a PSA or RMM connector honours the hook contract.

A connector package subclasses :class:`PsaConformance` or :class:`RmmConformance` in its tests and
provides one fixture describing the connector and how to seed its simulator or sandbox::

    from psabridge.testing import PsaConformance, PsaUnderTest

    class TestMyPsaConforms(PsaConformance):
        @pytest.fixture
        def psa_under_test(self):
            return PsaUnderTest(plugin=my_psa, name="mypsa", settings={...}, ...)

It needs pytest, which the `test` extra installs: ``pip install 'psabridge[test]'``.

See docs/writing-a-connector.md. The checks live in :mod:`.psa` and :mod:`.rmm`; what they are
given, in :mod:`.harness`.
"""

try:
    import pytest
except ModuleNotFoundError as missing:  # the kit is a test tool: say which extra brings it
    raise ModuleNotFoundError("psabridge.testing needs pytest: pip install 'psabridge[test]'",
                              name=missing.name) from missing

# The checks are plain asserts: have pytest explain them as it does in your own test files.
pytest.register_assert_rewrite("psabridge.testing.harness", "psabridge.testing.psa",
                               "psabridge.testing.rmm")

from psabridge.testing.harness import (  # noqa: E402 - after the rewrite registration
    PSA_REQUIRED_HOOKS,
    RMM_REQUIRED_HOOKS,
    PsaUnderTest,
    RmmUnderTest,
    TicketSetup,
)
from psabridge.testing.psa import PsaConformance  # noqa: E402
from psabridge.testing.rmm import RmmConformance  # noqa: E402

__all__ = ["PSA_REQUIRED_HOOKS", "RMM_REQUIRED_HOOKS", "PsaConformance", "PsaUnderTest",
           "RmmConformance", "RmmUnderTest", "TicketSetup"]
