"""Build of the optional C extension; everything else is declared in pyproject.toml.

``dsrt._fastlaunch`` is the hit path of ``Device.launch`` in C. It is optional: where no C compiler
is found the build goes on without it and dsrt launches through its Python path (same results).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dsrt._fastlaunch", ["dsrt/_fastlaunch.c"], optional=True)])
