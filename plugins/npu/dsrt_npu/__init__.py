"""dsrt_npu: not yet implemented; registers no backend."""
