"""dsrt_neuro: not yet implemented; registers no backend."""
