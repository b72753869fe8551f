"""APOS: autonomous payment orchestration.

The in-process API (``docs/routing.md``)::

    from apos import Engine, Payment, PaymentEvent, Decision

Parts of the core run compiled when built with ``make accel`` (see ``apos.accel``).
"""

import apos.accel  # noqa: F401  (first: APOS_PURE=1 must act before the core is imported)
from apos.core.config import EngineConfig, PolicyConfig
from apos.core.decision import Decision, TickReport
from apos.core.engine import Engine
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.payment import Payment

__version__ = "0.1.0"

__all__ = [
    "Decision",
    "Engine",
    "EngineConfig",
    "Payment",
    "PaymentEvent",
    "PaymentStatus",
    "PolicyConfig",
    "TickReport",
    "__version__",
]
