#!/usr/bin/env python3
"""otelHeadersHelper of .claude/settings.json: the header that lets Claude Code's telemetry into the hub.

Claude Code runs it (through a shell, in the directory the session started in) when it sets up its
OpenTelemetry exporter, and sends the JSON object it prints as headers with every export to the
hub's /otlp endpoints. The key is read where it already lives (VPS_API_KEY in the environment or in
.claude/settings.local.json, as the hooks read it), so it is written nowhere else.

Without a key it prints nothing and exits 1: Claude Code then exports nothing (an export without
the key would only be refused) and shows the one line this script writes to stderr.
"""

from __future__ import annotations

import json
import sys

from hooklib import setting


def main() -> int:
    key = setting("VPS_API_KEY").strip()
    if not key:
        print(
            "no VPS_API_KEY (environment or .claude/settings.local.json): usage is not sent to the hub",
            file=sys.stderr,
        )
        return 1
    print(json.dumps({"Authorization": f"Bearer {key}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
