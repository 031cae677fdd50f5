"""psabridge: the integration layer between an RMM and a PSA, built from pluggy plugins."""

__version__ = "0.1.0"
