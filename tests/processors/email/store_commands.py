"""Counting the commands a test sends to the store: the shape of its operations."""

from __future__ import annotations

from collections import Counter

from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent


class Commands(CommandListener):
    """The store commands sent, by (command, collection); a `find`'s `getMore`s are not counted."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name != "getMore":  # the rest of a `find`'s answer, not another read
            self.counts[(event.command_name, str(event.command.get(event.command_name)))] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        return None

    def failed(self, event: CommandFailedEvent) -> None:
        return None

    def named(self, name: str) -> int:
        return sum(count for (command, _), count in self.counts.items() if command == name)
