"""spec: what a run is.

The recipe (epochs, optimizer, schedule, batch size), the run config and its content-hashed identity, `--set`
options and the YAML files that hold them; where a run's files live (`paths.Paths`). Imports only core.
"""
