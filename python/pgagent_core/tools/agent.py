"""Tool kind ``agent``: calling the tool runs a child turn of another agent of the same tenant,
whose answer is the tool's result (pgagent_core.delegation; the loop runs it, unit by unit, in
:func:`pgagent_core.loop.agent_unit`).

Config: ``agent`` (the agent's name, required), ``max_depth`` (how deep a chain of agent calls
may go, 1..10, default 3). The child's user message is the call's ``message`` argument (or
``input``, ``task``, ``question``, ``query``), else the arguments as JSON text.
"""

from __future__ import annotations

from typing import Any

from . import ToolContext, ToolFailure


def check_config(config: dict[str, Any]) -> None:
    """Nothing beyond the ``tool.agent`` JSON Schema: the agent is looked up when the tool is
    called (it may be created after the tool). Returns None."""


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """Agent tools are run by the loop, not here. Raises ToolFailure always."""
    raise ToolFailure(f"tool {tool['name']!r} calls an agent; only the agent loop can run it")
