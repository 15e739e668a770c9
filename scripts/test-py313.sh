#!/usr/bin/env bash
# The unit tests (`pytest -m "not integration"`) on Python 3.13, in a throwaway venv under
# /tmp with the dev lock installed. Arguments go to pytest.
#
# No Python 3.13 on this machine is not a failure: the script says so and exits 0.
# Set PYTHON313 to choose the interpreter, VENV313 to choose where the venv goes; the
# venv is reused while requirements-dev.lock and requirements.lock are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

is_313() { [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; }

python=""
for candidate in "${PYTHON313:-}" python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
  if is_313 "$candidate"; then
    python=$candidate
    break
  fi
done
if [[ -z "$python" ]]; then
  echo "test-py313: SKIPPED, no Python 3.13 interpreter found (tried \$PYTHON313, python3.13, ~/.pyenv/versions/3.13*)"
  exit 0
fi

venv=${VENV313:-/tmp/kafka-job-worker-py313}
locks_sha=$(cat requirements.lock requirements-dev.lock | sha256sum | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$venv/.locks-sha256" 2>/dev/null)" != "$locks_sha" ]]; then
  echo "==> creating $venv with $("$python" --version) and the dev lock"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet --progress-bar off -r requirements.lock -r requirements-dev.lock
  echo "$locks_sha" >"$venv/.locks-sha256"
fi

echo "==> unit tests on $("$venv/bin/python" --version)"
# pytest finds the packages through `pythonpath = ["."]` (pyproject.toml).
exec "$venv/bin/python" -m pytest -m "not integration" -p no:cacheprovider "$@"
