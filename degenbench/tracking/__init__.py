"""What made a run (provenance: config, commit, versions, device, data and checkpoint
identity) and where it is logged (W&B)."""
