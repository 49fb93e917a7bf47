# Sourced by scripts/test and scripts/demo: make this checkout runnable on a fresh Debian machine.
#  1. Debian packages listed in scripts/debian-packages.txt, only those missing (needs root or sudo).
#  2. A virtualenv in .venv built from requirements/dev.lock (exact pins, hashes required),
#     rebuilt whenever the lock file changes; the project installed into it in editable mode.
#  3. The SFU's per-packet modules compiled with mypyc into build/sfu-native (edge/sfu/native.py)
#     whenever their sources changed; without a C compiler the SFU runs them as pure Python.
# Idempotent and quiet when there is nothing to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements/dev.lock"

say() { printf '==> %s\n' "$*" >&2; }

ensure_debian_packages() {
    local wanted=() missing=() pkg
    mapfile -t wanted < <(grep -Ev '^\s*(#|$)' "$ROOT/scripts/debian-packages.txt")
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then wanted+=(python3-venv); fi
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then sudo=(sudo); else
            say "missing Debian packages: ${missing[*]}"
            say "install them as root: apt-get install -y ${missing[*]}"
            exit 1
        fi
    fi
    say "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

ensure_venv() {
    local stamp="$VENV/.zastava-lock.sha256" want
    want="$(cat "$LOCK" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the virtualenv in .venv"
        python3 -m venv "$VENV"
    fi
    say "installing pinned dependencies from requirements/dev.lock (hashes checked)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$LOCK"
    say "installing zastava into .venv (editable)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps --no-build-isolation -e "$ROOT"
    echo "$want" > "$stamp"
}

ensure_compiled_sfu() {
    if "$VENV/bin/python" -c 'import sys; from edge.sfu import native; sys.exit(not native.active())' \
        2>/dev/null; then
        return 0
    fi
    local log="$ROOT/build/sfu-native.log"
    mkdir -p "$ROOT/build"
    say "compiling the SFU's per-packet modules with mypyc (~30 s; log: build/sfu-native.log)"
    if ! "$VENV/bin/python" "$ROOT/scripts/compile_sfu.py" >"$log" 2>&1; then
        tail -n 5 "$log" >&2
        say "compiling failed (no C compiler?): the SFU runs as pure Python, slower"
    fi
}

ensure_debian_packages
ensure_venv
ensure_compiled_sfu
export PATH="$VENV/bin:$PATH"
