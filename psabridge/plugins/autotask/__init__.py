"""Autotask PSA (REST API v1.0)."""
