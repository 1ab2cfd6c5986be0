"""Builds libvspec with cargo (in the workspace this folder belongs to, into the workspace's own
target dir, so a tree that was already built is not compiled again) and ships it inside the
package. VSPEC_LIB=/path/to/libvspec.so ships a prebuilt library instead."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
WORKSPACE = os.path.dirname(HERE)


def built_library():
    prebuilt = os.environ.get("VSPEC_LIB")
    if prebuilt:
        if not os.path.isfile(prebuilt):
            raise SystemExit(f"VSPEC_LIB={prebuilt} does not exist")
        return prebuilt
    if not os.path.isfile(os.path.join(WORKSPACE, "capi", "Cargo.toml")):
        raise SystemExit(
            f"{WORKSPACE} is not the Vspec workspace: install from the repository "
            "(pip install ./python) or set VSPEC_LIB to a built libvspec.so"
        )
    subprocess.run(
        ["cargo", "build", "--release", "-p", "vspec-capi"], cwd=WORKSPACE, check=True
    )
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(WORKSPACE, "target"))
    return os.path.join(target, "release", "libvspec.so")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "vspec")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(built_library(), os.path.join(dest, "libvspec.so"))


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform, not 'any'."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
