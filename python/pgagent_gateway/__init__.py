"""``pgagent serve``: a thin HTTP gateway over pgagent's SQL API (docs/http.md).

Every request is authenticated by an API key (``pgagent.create_api_key``), rate limited per key,
and then runs as the key's database role (``SET LOCAL ROLE`` on a pooled connection, in a
transaction that ends with the request), so row level security, budgets, hooks and the audit log
apply unchanged; nothing about agents is implemented here. Modules: :mod:`.auth` (keys, rate
limits), :mod:`.errors` (SQLSTATE -> HTTP), :mod:`.metrics` (Prometheus), :mod:`.events`
(server-sent events from LISTEN/NOTIFY), :mod:`.openai` (the OpenAI-compatible endpoint),
:mod:`.app` (the FastAPI application).
"""

__version__ = "0.2.0"
