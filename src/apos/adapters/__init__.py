"""Adapters: everything that talks to the outside world, behind the Protocols in ``ports``."""
