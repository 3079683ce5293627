"""The bundle format: container, manifest, signatures, encryption, verification.

May import: keys and base (errors, files, profiles, native_output) only. docs/FORMAT.md is the contract.
"""
