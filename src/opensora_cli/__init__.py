"""opensora-cli: conditioned video generation with Open-Sora Plan v1.3.

Importing the package is cheap (no torch): heavy modules are imported by the services that need them.
"""

__version__ = "0.1.0.dev0"
