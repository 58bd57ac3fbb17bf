"""Tool kind ``handoff``: calling the tool moves the conversation to another agent of the same
tenant, which answers the current message and the ones after it (pgagent_core.delegation; the
loop does it in :func:`pgagent_core.loop.handoff_unit`).

Config: ``agent`` (the agent's name, required). The call's optional ``reason`` argument is
recorded with the handoff.
"""

from __future__ import annotations

from typing import Any

from . import ToolContext, ToolFailure


def check_config(config: dict[str, Any]) -> None:
    """Nothing beyond the ``tool.handoff`` JSON Schema (the agent is looked up at call time).
    Returns None."""


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """Handoffs are done by the loop, not here. Raises ToolFailure always."""
    raise ToolFailure(f"tool {tool['name']!r} hands the conversation off; only the agent loop can run it")
