"""Class-sharded NPT proxies under torch.distributed: each rank owns a slice of the proxy rows.

Only the top-k ``(cosine, index)`` pairs cross ranks, so traffic per step is O(B·k), not O(B·C).
"""
