"""Federated simulation of many clients on one machine with Flower's simulation engine.

Empty until the federated fine-tuning issue lands; kept so that the package layout is stable.
"""
