"""Search: the asynchronous GA and its SVM surrogate. Nothing here knows about MPI."""
from menndl_py.search.ga import AsyncGA, Proposal
from menndl_py.search.surrogate import Surrogate

__all__ = ["AsyncGA", "Proposal", "Surrogate"]
