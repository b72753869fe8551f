"""APOS."""
