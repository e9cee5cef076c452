"""Physics of materials: synthetic microstructures and the solvers that label them."""
