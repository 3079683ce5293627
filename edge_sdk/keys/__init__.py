"""Keys: files, key references, PKCS#11 tokens, TPMs.

May import: base (errors, files, profiles, native_output) only.
"""
