#!/usr/bin/env bash
# Set up .venv and run the test suite. Extra arguments go to pytest.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
"$here/setup-venv.sh"
source "$here/env.sh"
cd "$root"
exec python -m pytest "$@"
