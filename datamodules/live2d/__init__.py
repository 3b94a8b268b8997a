"""Live2D Cubism models rendered headlessly: characters posed by the standard parameters."""
