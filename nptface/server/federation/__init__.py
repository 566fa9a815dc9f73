"""The Flower ServerApp: the round loop around one shared bank of identity proxies.

Clients fine-tune the backbone and their own identities' rows; the server registers rows,
chooses each client's negatives from the bank, screens and aggregates replies, keeps the bank
spread out (the paper's Property 2) and writes resumable federated state.
"""
