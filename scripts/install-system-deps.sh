#!/usr/bin/env bash
# Installs the Debian packages pgagent needs (python3-croniter: pgagent.schedule, in PL/Python) and builds pgvector 0.8 from Debian's
# source package (bookworm does not ship it). Idempotent: every step checks first.
set -euo pipefail
PG_MAJOR=${PG_MAJOR:-15}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}

need_pkgs=()
for p in postgresql-plpython3-$PG_MAJOR postgresql-$PG_MAJOR-pgtap postgresql-server-dev-$PG_MAJOR \
         python3-requests python3-jsonschema python3-psycopg python3-croniter python3-venv libtap-parser-sourcehandler-pgtap-perl \
         dpkg-dev build-essential chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "== apt-get install ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# pgvector: built from trixie's source package with PGXS.
sharedir=$("$PG_CONFIG" --sharedir)
if [ ! -f "$sharedir/extension/vector.control" ] || ! grep -q "default_version = '0.8" "$sharedir/extension/vector.control"; then
  src_list=/etc/apt/sources.list.d/pgagent-trixie-src.sources
  if [ ! -f "$src_list" ]; then
    # Reuse the URI of the machine's existing Debian entry; never hard-code a mirror host.
    uri=$(grep -h -E '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
          | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
      uri=$(awk '$1=="deb" && $0 ~ /bookworm/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list | grep -E '/debian/?$' | head -n1 || true)
    fi
    [ -n "$uri" ] || { echo "no Debian apt source found to derive a deb-src entry from" >&2; exit 1; }
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' "$uri" "$keyring" \
      | $SUDO tee "$src_list" >/dev/null
    $SUDO apt-get update -qq
  fi
  build=$(mktemp -d)
  ( cd "$build" && apt-get source -qq pgvector >/dev/null 2>&1 )
  dir=$(find "$build" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
  [ -n "$dir" ] || { echo "apt-get source pgvector failed" >&2; exit 1; }
  echo "== building pgvector in $dir"
  make -s -C "$dir" PG_CONFIG="$PG_CONFIG" >/dev/null 2>&1
  $SUDO make -s -C "$dir" PG_CONFIG="$PG_CONFIG" install >/dev/null
  rm -rf "$build"
fi
echo "system deps ok: $(grep default_version "$sharedir/extension/vector.control")"
