"""dsrt_photonic: not yet implemented; registers no backend."""
