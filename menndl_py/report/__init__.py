"""Plots and Markdown summary of a run directory (`menndl report`)."""
