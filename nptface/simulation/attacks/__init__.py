"""Faults and attacks injected into a simulated federation: failing and slow clients, poisoned replies, proxy linkage."""
