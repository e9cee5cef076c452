"""EBSD orientation indexing: patterns of nickel to crystal orientations (issue 20)."""
