"""PanDA: REST client and prun-style task parameters."""
