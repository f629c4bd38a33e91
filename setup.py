"""Build of the optional C extension; everything else is declared in pyproject.toml.

Three optional C extensions, each standing in for a Python path that stays the reference:
``dsrt._fastlaunch`` (``Device.launch`` with a cached signature), ``dsrt.memory._fastpool`` (the
pool's quick-cache allocate and free) and ``dsrt_cpu._ufunc`` (the CPU backend's ufunc kernels).
Where no C compiler is found the build goes on without them and dsrt runs the Python paths (same
results); ``DSRT_FASTPATH=off`` turns them off at run time.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("dsrt._fastlaunch", ["dsrt/_fastlaunch.c"], depends=["dsrt/_cslots.h"], optional=True),
    Extension("dsrt.memory._fastpool", ["dsrt/memory/_fastpool.c"], depends=["dsrt/_cslots.h"], optional=True),
    Extension("dsrt_cpu._ufunc", ["plugins/cpu/dsrt_cpu/_ufunc.c"], include_dirs=["dsrt"], optional=True),
])
