"""The fleet: deploy to targets, inventories, the TUF repository and agent, audits.

May import: device, format, keys and base.
"""
