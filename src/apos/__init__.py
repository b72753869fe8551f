"""APOS: autonomous payment orchestration."""

__version__ = "0.1.0"
