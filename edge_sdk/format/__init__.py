"""The bundle format: container, manifest, signatures, encryption, and key slips."""
