"""rfmcube-cdc: the streaming service that keeps Rfmcube equal to the shop."""

from importlib import metadata


def version() -> str:
    """The installed distribution's version ("unknown" in a source tree not installed)."""
    try:
        return metadata.version("rfmcube-cdc")
    except metadata.PackageNotFoundError:
        return "unknown"
