"""Builds the Cython hot paths: the chunker, and the /proc reads of the last-close check. There
is deliberately no pure-Python fallback: if an extension does not compile, installation fails
(a silent fallback would run ~200x slower)."""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "wormfs._chunker",
        sources=["csrc/_chunker.pyx", "csrc/fastcdc.c"],
        include_dirs=["csrc"],
        extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-function"],
    ),
    Extension(
        "wormfs._procfs",
        sources=["csrc/_procfs.pyx"],
        extra_compile_args=["-O2", "-D_GNU_SOURCE", "-Wall", "-Wno-unused-function"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
