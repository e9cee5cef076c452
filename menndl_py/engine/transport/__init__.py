"""What carries work and results between the master and the groups: one process (serial) or MPI ranks (mpi)."""
