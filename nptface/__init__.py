"""nptface: train, federate and ship face-verification models built on the NPT loss.

NPT (Nearest Proxies Triplet, Khalid et al., TPAMI 2023, arXiv 2103.03503) pulls an embedding
towards its identity's proxy and pushes it away from its k nearest negative proxies on the
hypersphere; see :mod:`nptface.core.losses`.
"""

__version__ = "0.1.0"
