"""The device side: load verified bundles and run them, keep state and the audit log.

May import: format, keys and base; never host, fleet or cli (a board installs only the device extra).
"""
