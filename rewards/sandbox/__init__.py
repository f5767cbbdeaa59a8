"""Run untrusted plotting code: a pool of warm workers forking one fully isolated process per render.

Threat model and what each platform enforces: ``docs/sandbox.md``. Entry points:
:class:`SandboxPool` (``run`` / ``submit`` / ``map``), :class:`SandboxConfig`, :class:`RenderResult`.
"""

from rewards.sandbox.config import FAIL_REASONS, RenderResult, SandboxConfig
from rewards.sandbox.pool import SandboxPool

__all__ = ["FAIL_REASONS", "RenderResult", "SandboxConfig", "SandboxPool"]
