"""Fleet tooling: deploy, transports, inventories, the TUF repository, key slips at scale."""
