"""REANA: REST client, spec templating, secrets, the submitter and a local engine."""
