"""Subcommands registered on the root group (filled in by their issues)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    del cli
