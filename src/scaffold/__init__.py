"""vps-agent-scaffold: a coordinator and Claude Code workers on one server-side codebase."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vps-agent-scaffold")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
