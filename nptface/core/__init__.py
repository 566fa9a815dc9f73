"""The science of nptface: losses, models, data and metrics.

Nothing here knows about training policy, federation, export or the command line; every other
subpackage builds on this one and never the other way round.
"""
