"""The Flower ClientApp: local fine-tuning of the backbone and of one party's own proxy rows.

``protocol`` is the message contract with the server (which may import it); nothing here knows
about simulation, attacks or test harnesses.
"""
