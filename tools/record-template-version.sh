#!/bin/sh
# Release step: add this checkout's template, tagged VERSION+DIGEST, to template-history.bundle,
# so every later package can rebuild it for copier's 3-way merge. Commit the bundle, then build.
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -c 'from scaffold.render import record_release, template_root; print(record_release(template_root()))'
