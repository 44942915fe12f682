"""The optional C accelerators; everything else about the package is in pyproject.toml.

Each extension is ``optional``: where no C compiler is available the build goes on without it
and the package runs its pure-Python paths, which give the same results (the unit tests run
both and compare them). ``CDC_PURE_PYTHON=1`` selects the pure-Python paths at run time.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("cdc._avroread", ["cdc/_avroread.c"], optional=True),
        Extension("cdc._avrowrite", ["cdc/_avrowrite.c"], optional=True),
    ]
)
