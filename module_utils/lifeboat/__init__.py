"""Lifeboat engine: plain Python used by the thin Ansible modules in library/."""

TOOL_VERSION = "0.1.0"
