# pgagent: PGXS build. `make install` installs the extension SQL and the Python package
# (pgagent_core) into a versioned directory that the server's PL/Python imports from.
EXTENSION   = pgagent
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pgagent.control)
PG_CONFIG  ?= $(shell command -v pg_config >/dev/null 2>&1 && pg_config --version | grep -q ' 15' && echo pg_config || echo /usr/lib/postgresql/15/bin/pg_config)
PYLIBROOT  ?= /usr/local/lib/pgagent_core
PYLIBDIR    = $(PYLIBROOT)/$(EXTVERSION)
MARKER      = pgagent-llm-extension-marker

# sql/10_tables.sql (tables, indexes, the default tenant) runs only at CREATE EXTENSION. Every
# other sql/NN_*.sql file is replayable (CREATE OR REPLACE, DROP IF EXISTS + CREATE, GRANT, ...):
# the full script is all of them in order; an upgrade script to this version is the hand-written
# migrations/pgagent--<old>--<new>.sql (table changes, backfills, drops) followed by the replayable
# files. See migrations/README.md.
SQL_SRC     = $(sort $(wildcard sql/[0-9][0-9]_*.sql))
SQL_ONCE    = sql/10_tables.sql
SQL_REPLAY  = $(filter-out $(SQL_ONCE),$(SQL_SRC))
BUILT_SQL   = build/$(EXTENSION)--$(EXTVERSION).sql
MIGRATIONS  = $(sort $(wildcard migrations/$(EXTENSION)--*--*.sql))
UPGRADES    = $(patsubst migrations/%,build/%,$(MIGRATIONS))
DATA_built  = $(BUILT_SQL) $(UPGRADES)
EXTRA_CLEAN = build

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.DEFAULT_GOAL := all
all: $(BUILT_SQL) $(UPGRADES)

SUBST = sed -e 's|@PYLIBDIR@|$(PYLIBDIR)|g' -e 's|@EXTVERSION@|$(EXTVERSION)|g'

$(BUILT_SQL): $(SQL_SRC) pgagent.control Makefile
	@mkdir -p build
	@{ echo '-- generated from sql/*.sql by make; do not edit'; \
	   printf '%s\n' '\echo Use "CREATE EXTENSION pgagent" to load this file. \quit'; \
	   for f in $(SQL_SRC); do echo; echo "-- ---- $$f"; cat $$f; done; } | $(SUBST) > $@

# The last step of an upgrade path (to this version): its migration, then the replayable files.
build/$(EXTENSION)--%--$(EXTVERSION).sql: migrations/$(EXTENSION)--%--$(EXTVERSION).sql $(SQL_REPLAY) pgagent.control Makefile
	@mkdir -p build
	@{ echo '-- generated from $< and the replayable sql/*.sql by make; do not edit'; \
	   printf '%s\n' '\echo Use "ALTER EXTENSION pgagent UPDATE" to load this file. \quit'; \
	   echo; echo "-- ---- $<"; cat $<; \
	   for f in $(SQL_REPLAY); do echo; echo "-- ---- $$f"; cat $$f; done; } | $(SUBST) > $@

# An earlier step (to an older version): its migration only; the last step replays this version's
# files. Update to the newest version only (ALTER EXTENSION pgagent UPDATE).
build/$(EXTENSION)--%.sql: migrations/$(EXTENSION)--%.sql pgagent.control Makefile
	@mkdir -p build
	@{ echo '-- generated from $< by make; do not edit'; \
	   printf '%s\n' '\echo Use "ALTER EXTENSION pgagent UPDATE" to load this file. \quit'; \
	   echo; echo "-- ---- $<"; cat $<; } | $(SUBST) > $@

# Refuse to overwrite pgAdmin's pgAgent (same extension name, unrelated project).
install: check-not-pgadmin install-python
check-not-pgadmin:
	@ctl="$(DESTDIR)$(datadir)/extension/$(EXTENSION).control"; \
	if [ -f "$$ctl" ] && ! grep -q '$(MARKER)' "$$ctl"; then \
	  echo "ERROR: $$ctl exists and is not this project's (probably pgAdmin's pgAgent job scheduler)."; \
	  echo "       pgagent (the AI agent runtime) is unrelated to it; refusing to overwrite it."; \
	  exit 1; fi
install-python:
	@mkdir -p "$(DESTDIR)$(PYLIBDIR)"
	@rm -rf "$(DESTDIR)$(PYLIBDIR)/pgagent_core"
	@cp -r python/pgagent_core "$(DESTDIR)$(PYLIBDIR)/"
	@find "$(DESTDIR)$(PYLIBDIR)" -name __pycache__ -prune -exec rm -rf {} +
	@chmod -R a+rX "$(DESTDIR)$(PYLIBROOT)"
	@echo "installed pgagent_core into $(DESTDIR)$(PYLIBDIR)"

.PHONY: deps demo console test bench eval check-not-pgadmin install-python print-sharedir print-replay
deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-python-env.sh
	$(MAKE) install

demo: deps
	.venv/bin/python examples/demo.py

# the demo, then its cluster kept with the gateway and web console on 127.0.0.1:8750 (docs/console.md)
console: deps
	.venv/bin/python examples/demo.py --serve

eval: deps
	.venv/bin/python bench/eval.py $(EVAL_ARGS)

test: deps
	bash scripts/run-tests.sh

bench: deps
	.venv/bin/python bench/bench_turn.py
	.venv/bin/python bench/bench_views.py
	.venv/bin/python bench/bench_workers.py
	.venv/bin/python bench/bench_memory.py
	.venv/bin/python bench/bench_peers.py
	.venv/bin/python bench/bench_gateway.py

print-sharedir:
	@echo $(datadir)

# The replayable files, in order (tests/python/test_upgrade.py).
print-replay:
	@echo $(SQL_REPLAY)
