"""STEM atomic-defect identification (the MENNDL task)."""
