"""The `menndl` subcommands, thin over the packages: run, baseline, retrain, predict, data."""
