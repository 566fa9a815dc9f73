"""ONNX, TFLite (LiteRT) and Core ML export with a parity gate against the fp32 reference.

``pipeline.export_bundle`` is the entry point (``nptface export`` on the command line); the
format modules build variants, ``runtimes`` runs them, ``parity`` judges them and ``bundle``
writes and verifies what ships.
"""
