"""Errors of the technician tools: one base, turned into a one-line message by main()."""


class ToolError(Exception):
    """Base error of the tools; its message says what to do."""
