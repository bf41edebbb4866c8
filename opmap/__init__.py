"""opmap: operando micro-XRD imaging of batteries on Bluesky, with Tiled-served data and analysis.

The domain packages are installed beside this thin entry point:
``opmap.devices``, ``opmap.plans``, ``opmap.callbacks`` and ``opmap.analysis``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opmap")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
