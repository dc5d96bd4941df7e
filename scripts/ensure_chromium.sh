#!/bin/sh
# `make browser` (run by `make test`): Debian's headless Chromium and its driver for the
# store explorer's browser tests (tests/ui). Installs them with apt-get only when missing and
# only when it can (root, apt-get present); otherwise it does nothing and those tests skip
# saying why. Under CI=true a Chromium that is missing and cannot be installed is an error,
# so a CI run never passes by skipping the browser tests.
set -u
have() { command -v "$1" >/dev/null 2>&1; }
if { have chromium || have chromium-browser; } && have chromedriver; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing chromium and chromium-driver (apt-get) for the browser tests" >&2
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq chromium chromium-driver >/dev/null; then
        exit 0
    fi
    echo "apt-get could not install chromium" >&2
fi
if [ "${CI:-}" = true ]; then
    echo "chromium/chromedriver are missing and could not be installed: the browser tests" \
         "(tests/ui) cannot run" >&2
    exit 1
fi
exit 0
