"""``pgagent worker``: a pool of connections that claim queued turns and run them with
``CALL pgagent.run_turn`` (issue 9). See :mod:`pgagent_worker.worker` and docs/durability.md."""

__version__ = "0.2.0"
