"""Roadside technician and developer tools (host side, typed)."""
