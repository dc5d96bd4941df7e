"""The one thing pyproject.toml cannot say: the compiled segment decoder (seqvault/native_decode.c)
needs NumPy's headers and links libzstd and zlib (Debian: libzstd-dev, zlib1g-dev; `make venv`
installs them through scripts/ensure_sysdeps.sh); the append kernel (seqvault/native_append.c)
needs NumPy's headers only. Everything else is in pyproject.toml.

It also copies schema/ into the wheel (`BuildPyWithSchema`).

The extensions are optional: where one cannot be built, SeqVault runs its pure-Python decoder
or append path (same answers, slower; `seqvault.native_available()` says which decoder). Under CI=true or
SEQVAULT_REQUIRE_NATIVE=1 a failed build is an error instead.
"""

import os
import shutil
from pathlib import Path

import numpy
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

required = os.environ.get("CI") == "true" or os.environ.get("SEQVAULT_REQUIRE_NATIVE") == "1"



class BuildPyWithSchema(build_py):
    """Ship the top-level schema/ folder inside the package as seqvault/_bundled_schema
    (schema.bundled_schema_path looks there first; a source checkout reads schema/ itself)."""

    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "seqvault" / "_bundled_schema"
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted(Path("schema").glob("*.toml")):
            shutil.copyfile(src, dest / src.name)


setup(
    cmdclass={"build_py": BuildPyWithSchema},
    ext_modules=[
        Extension(
            "seqvault.native_decode",
            ["seqvault/native_decode.c"],
            include_dirs=[numpy.get_include()],
            libraries=["zstd", "z"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=not required,
        ),
        # The append kernel (seqvault/native_append.c): NumPy's headers, and zlib for the record crc.
        Extension(
            "seqvault.native_append",
            ["seqvault/native_append.c"],
            include_dirs=[numpy.get_include()],
            libraries=["z"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=not required,
        ),
        # CRC-32 of many short strings (seqvault/crc_many.py's compiled path): zlib only.
        Extension("seqvault.native_crc", ["seqvault/native_crc.c"], libraries=["z"],
                  extra_compile_args=["-O3", "-std=c11"], optional=not required),
    ],
)
