# pgagent: PGXS build. `make install` installs the extension SQL and the Python package
# (pgagent_core) into a versioned directory that the server's PL/Python imports from.
EXTENSION   = pgagent
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pgagent.control)
PG_CONFIG  ?= $(shell command -v pg_config >/dev/null 2>&1 && pg_config --version | grep -q ' 15' && echo pg_config || echo /usr/lib/postgresql/15/bin/pg_config)
PYLIBROOT  ?= /usr/local/lib/pgagent_core
PYLIBDIR    = $(PYLIBROOT)/$(EXTVERSION)
MARKER      = pgagent-llm-extension-marker

SQL_SRC     = $(sort $(wildcard sql/[0-9][0-9]_*.sql))
BUILT_SQL   = build/$(EXTENSION)--$(EXTVERSION).sql
UPGRADES    = $(wildcard migrations/$(EXTENSION)--*--*.sql)
DATA_built  = $(BUILT_SQL)
DATA        = $(UPGRADES)
EXTRA_CLEAN = build

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.DEFAULT_GOAL := all
all: $(BUILT_SQL)

$(BUILT_SQL): $(SQL_SRC) pgagent.control Makefile
	@mkdir -p build
	@{ echo '-- generated from sql/*.sql by make; do not edit'; \
	   printf '%s\n' '\echo Use "CREATE EXTENSION pgagent" to load this file. \quit'; \
	   for f in $(SQL_SRC); do echo; echo "-- ---- $$f"; cat $$f; done; } \
	 | sed -e 's|@PYLIBDIR@|$(PYLIBDIR)|g' -e 's|@EXTVERSION@|$(EXTVERSION)|g' > $@

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

.PHONY: deps demo test bench check-not-pgadmin install-python print-sharedir
deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-python-env.sh
	$(MAKE) install

demo: deps
	.venv/bin/python examples/demo.py

test: deps
	bash scripts/run-tests.sh

bench: deps
	.venv/bin/python bench/bench_turn.py

print-sharedir:
	@echo $(datadir)
