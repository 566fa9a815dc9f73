"""On-device verification: enrol, verify and identify faces where the images are.

The face images and the templates never leave the device. The web demo (``server`` + ``static/``)
runs the bundle's ONNX model in the browser with onnxruntime-web, the server only hands out
files; the command line (``on_device`` + ``gallery``) runs the same bundle on onnxruntime or on
the LiteRT interpreter, the mobile runtime. Both read images through the limits in ``images``
and compare templates the same way, so the page and the CLI give the same scores.
"""
