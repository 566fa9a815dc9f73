"""Centralised training of the backbone and the proxy bank, on one process or under torchrun.

``trainer.Trainer`` is the entry point (``nptface train``); ``config`` holds the declarative
run configs (``configs/*.toml``), and ``sharding`` splits the NPT proxies by class across ranks.
"""
