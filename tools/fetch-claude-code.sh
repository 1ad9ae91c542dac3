#!/usr/bin/env bash
# Fetch the pinned Claude Code CLI (a self-contained binary from the npm package
# @anthropic-ai/claude-code-linux-x64) into a cache outside the repository and print its path.
# Used by .ci/run and by the tests that run the real CLI. Idempotent: a cached binary is reused.
set -euo pipefail

version="${CLAUDE_CODE_VERSION:-2.1.329}"
cache="${VPS_SCAFFOLD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vps-agent-scaffold/claude-code}"
dir="$cache/$version"
bin="$dir/claude"

if [ ! -x "$bin" ]; then
  command -v npm >/dev/null || { echo "fetch-claude-code: npm is needed to fetch Claude Code" >&2; exit 1; }
  mkdir -p "$dir"
  tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  tarball="$cache/anthropic-ai-claude-code-linux-x64-$version.tgz"
  if [ ! -s "$tarball" ]; then
    (cd "$tmp" && npm pack --silent "@anthropic-ai/claude-code-linux-x64@$version" >/dev/null)
    mv "$tmp"/anthropic-ai-claude-code-linux-x64-"$version".tgz "$tarball"
  fi
  tar -xzf "$tarball" -C "$tmp" package/claude
  chmod +x "$tmp/package/claude"
  mv "$tmp/package/claude" "$bin"
fi
echo "$bin"
