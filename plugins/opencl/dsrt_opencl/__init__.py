"""dsrt_opencl: not yet implemented; registers no backend."""
