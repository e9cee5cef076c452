"""Training one candidate, alone or data-parallel over a worker group."""
