"""Centralised training of the backbone and proxy bank (the federated server side comes later)."""
