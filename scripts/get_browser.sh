#!/usr/bin/env bash
# Make a headless Chromium and its driver available for the documentation test
# (tests/test_docs.py loads the built site in a real browser). Debian's packages, where this
# runs as root with apt; elsewhere the test skips unless AEVB_REQUIRE_DATA=1 (CI). Never fails.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium and chromium-driver (headless browser for the docs test)" >&2
  (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) && exit 0
fi
echo "note: no Chromium; the docs' browser test will be skipped" >&2
exit 0
