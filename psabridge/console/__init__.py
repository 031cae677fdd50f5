"""The web console served by `psabridge serve`: see `app.ConsoleApp`."""

from psabridge.console.app import ConsoleApp

__all__ = ["ConsoleApp"]
