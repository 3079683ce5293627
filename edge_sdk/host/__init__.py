"""The host side: convert, quantize, prune, package, seal, attest provenance.

May import: device (to evaluate a converted model), format, keys and base. TensorFlow is imported
inside functions only.
"""
