"""Prefect flows: thin wiring of deepsolar library calls.

Imported before any flow module (and so before Prefect reads its settings), whichever way a flow
starts (``deepsolar <command>``, ``python -m flows.<flow>``, a deployment's worker): it gives
Prefect's temporary API server a start-up limit that a loaded machine meets (Prefect's default,
20 s, was missed on a busy 2-core machine) and turns telemetry off. Values set in the
environment win.
"""

from deepsolar.core.runtime import prefect_env_defaults

prefect_env_defaults()
