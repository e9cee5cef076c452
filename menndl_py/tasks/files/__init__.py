"""Generic tasks on a user's own files (tables, compositions, image stacks, segmentation), configured in YAML only."""
