#!/usr/bin/env bash
# Creates or updates the suite's virtual environment; idempotent and fast when nothing changed.
#
# The environment lives outside the clone (default ~/.cache/emae/venv, override with EMAE_VENV) with the
# built detectron2 wheel (~/.cache/emae/wheels), so a fresh clone on the same machine reuses both. It is
# rebuilt when requirements.txt or these scripts change. The checkout itself is installed in editable
# mode, re-installed whenever setup runs from another clone or pyproject.toml changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${EMAE_CACHE:-$HOME/.cache/emae}
venv=${EMAE_VENV:-$cache/venv}
py=$venv/bin/python
stamp=$venv/.emae-setup
want=$(cat "$root/requirements.txt" "$root/scripts/setup.sh" "$root/scripts/build_detectron2_wheel.sh" | sha256sum | cut -d' ' -f1)

if [ ! -x "$py" ]; then
    echo "setup: creating $venv" >&2
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing requirements into $venv" >&2
    "$py" -m pip install -q --upgrade pip
    "$py" -m pip install -q -r "$root/requirements.txt"
    wheel=$(bash "$root/scripts/build_detectron2_wheel.sh" "$py" "$cache/wheels")
    "$py" -m pip install -q --force-reinstall --no-deps "$wheel"
    "$py" -m pip install -q "$wheel"  # detectron2's own requirements (yacs, termcolor, ...)
    "$py" -m pip check >&2
    echo "$want" > "$stamp"
fi

# the checkout, editable, pointing at this clone; installed again when the clone or its packages change
checkout="$root $(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$venv/.emae-root" 2>/dev/null)" != "$checkout" ]; then
    "$py" -m pip install -q --no-deps --no-build-isolation -e "$root"
    echo "$checkout" > "$venv/.emae-root"
fi

# Fashion-MNIST from Debian's package
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    echo "setup: installing dataset-fashion-mnist" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd=sudo
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
