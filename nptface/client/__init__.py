"""The federated client: local fine-tuning of the backbone and of one party's own proxies.

Empty until the federated fine-tuning issue lands; kept so that the package layout is stable.
"""
