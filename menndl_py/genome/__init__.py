"""Genomes: plain-data network descriptions, the spaces they live in, and how they become torch modules."""
from menndl_py.genome.genome import Genome
from menndl_py.genome.space import Choice, SearchSpace

__all__ = ["Genome", "Choice", "SearchSpace"]
