"""ONNX, TFLite (LiteRT) and Core ML export with a parity gate against the fp32 reference.

Empty until the edge export issue lands; kept so that the package layout is stable.
"""
