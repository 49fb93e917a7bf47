"""``bootstrap.sh``: the script on the media for a host where no Zastava is installed yet.

It makes a throwaway virtualenv from the media's wheels (pip itself runs from its wheel, so the
host needs only ``python3``) and hands over to ``zastava install`` from it, which checks the
signed manifest and every file again before installing anything. Before pip runs, the script
checks what it can with the host's own tools: the release key's fingerprint and the manifest's
signature with ``openssl`` when the host has it, and every file's SHA-256 with the host's
``python3``. The script itself comes from the media: docs/installing.md says how an admin
checks it first.
"""

from __future__ import annotations

SCRIPT = r"""#!/bin/sh
# Zastava offline media: the first installation on a host that has no Zastava yet.
#   sh /media/zastava/bootstrap.sh --release-fingerprint "AB12 CD34 ..." \
#       --role edge --site plant-a [more 'zastava install' options]
# Later upgrades use the installed command: zastava upgrade --media /media/zastava
set -eu
MEDIA=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
say() { printf 'bootstrap: %s\n' "$*" >&2; }

FP=""
prev=""
for a in "$@"; do
    [ "$prev" = "--release-fingerprint" ] && FP=$a
    prev=$a
done
if [ -z "$FP" ]; then
    say "give --release-fingerprint: the release key fingerprint you were told out of band"
    exit 2
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "this host has no python3; install it from the media first, as root:"
    say "  for n in 1 2 3 4; do dpkg -i --skip-same-version $MEDIA/debs/all/*.deb && break; done"
    exit 1
fi
want=$(printf '%s' "$FP" | tr -d ' :' | tr 'A-F' 'a-f')
if command -v openssl >/dev/null 2>&1; then
    have=$(openssl pkey -pubin -in "$MEDIA/release-key.pem" -outform DER | sha256sum)
    have=${have%% *}
    if [ "$have" != "$want" ]; then
        say "the media's release key has fingerprint $have, not the one you were given: refusing"
        exit 1
    fi
    if ! openssl pkeyutl -verify -pubin -inkey "$MEDIA/release-key.pem" -rawin \
            -in "$MEDIA/manifest.json" -sigfile "$MEDIA/manifest.sig" >/dev/null; then
        say "the manifest's signature does not verify: refusing the media"
        exit 1
    fi
else
    say "no openssl on this host: the signature is checked by 'zastava install' below"
fi
"$PYTHON" - "$MEDIA" <<'EOF'
import hashlib, json, pathlib, sys
media = pathlib.Path(sys.argv[1])
manifest = json.loads((media / "manifest.json").read_bytes())
for f in manifest["files"]:
    p = media / f["path"]
    if p.is_symlink() or hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"]:
        sys.exit("bootstrap: " + f["path"] + " differs from the manifest: refusing the media")
EOF
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zastava-installer.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
say "preparing the installer in $WORK (from the media only)"
"$PYTHON" -m venv --without-pip "$WORK/venv"
for w in "$MEDIA"/wheels/pip-*.whl; do PIP_WHEEL=$w; done
"$WORK/venv/bin/python" "$PIP_WHEEL/pip" install --quiet --no-index --no-compile \
    --disable-pip-version-check --find-links "$MEDIA/wheels" --require-hashes \
    -r "$MEDIA/requirements.txt"
status=0
"$WORK/venv/bin/python" -m installer.media_cli install --media "$MEDIA" \
    --release-key "$MEDIA/release-key.pem" "$@" || status=$?
exit $status
"""
