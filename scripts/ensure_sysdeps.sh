#!/bin/sh
# `make venv` (so `make demo` and `make test`) runs this before pip: the C headers that the
# compiled segment decoder (seqvault/native_decode.c) builds against, Debian's libzstd-dev and
# zlib1g-dev (and a C compiler and Python's headers, where those are missing too). Installs
# them with apt-get only when missing and only when it can (root, apt-get present). Otherwise
# the build skips the extension and SeqVault runs its pure-Python decoder (slower, same
# answers); under CI=true a missing header is an error instead, so CI never
# silently benchmarks the Python fallback.
set -u
have() { command -v "$1" >/dev/null 2>&1; }
header() {  # is <$1> found by the C compiler?
    printf '#include <%s>\n' "$1" | ${CC:-cc} -E -x c - >/dev/null 2>&1
}
missing=""
have "${CC:-cc}" || missing="$missing gcc"
header zstd.h || missing="$missing libzstd-dev"
header zlib.h || missing="$missing zlib1g-dev"
# Python.h of the interpreter the venv is made from (Debian's python3 keeps it in python3-dev)
"${PY:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    2>/dev/null || missing="$missing python3-dev"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing$missing (apt-get) for the compiled segment decoder" >&2
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq $missing >/dev/null; then
        exit 0
    fi
    echo "apt-get could not install$missing" >&2
fi
if [ "${CI:-}" = true ]; then
    echo "C headers missing ($missing) and not installable: the compiled segment decoder" \
         "cannot be built" >&2
    exit 1
fi
echo "note:$missing missing: seqvault will use its pure-Python segment decoder" >&2
exit 0
