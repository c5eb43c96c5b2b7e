"""Backends: where tasks run (local, panda, reana) behind one small contract."""
