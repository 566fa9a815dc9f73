"""Many clients on one machine (Flower's simulation engine): experiments, baselines, attacks.

Every test harness lives here (attackers, failing and slow clients, the proxy-linkage attack),
injected into the production apps through Flower client mods and a server hook.
"""
