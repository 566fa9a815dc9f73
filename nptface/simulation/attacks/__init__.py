"""Attacks and faults used to measure the federation: poisoned updates and proxy linkage."""
