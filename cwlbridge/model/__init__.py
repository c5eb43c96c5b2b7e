"""The pchain model: load, check, resolve and plan a chain without any server."""
