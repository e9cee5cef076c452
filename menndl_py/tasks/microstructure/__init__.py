"""Periodic two-phase microstructures: homogenization (C11) and localization (strain fields)."""
