"""Errors of the gateway: one base, turned into a one-line message by the command line."""


class GatewayError(Exception):
    """Base error of the gateway; its message says what to do."""


class ConfigError(GatewayError):
    """The configuration file is missing, unreadable or invalid; the message names the fix."""
