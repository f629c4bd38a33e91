"""dsrt_quantum: not yet implemented; registers no backend."""
