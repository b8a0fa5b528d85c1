"""Typed async BBS client used by every other component and the CLI."""
