"""dsrt_cuda: not yet implemented; registers no backend."""
