"""The server side: centralised training (``training``) and the Flower ServerApp (``federation``).

The two share nothing but ``core``: a federated run starts from a model the trainer wrote, read
back through the checkpoint contract in :mod:`nptface.core.checkpoint`.
"""
