"""pgagent_core: the agent loop that pgagent's PL/Python functions call.

The package is plain Python (3.11+, requests and jsonschema) and does not import ``plpy``:
the database is reached through the small :class:`pgagent_core.db.Db` protocol, so every
part of the loop can be imported and tested outside PostgreSQL.
"""

__version__ = "0.2.0"
