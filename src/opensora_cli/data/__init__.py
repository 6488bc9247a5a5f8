"""Media reading, resolution rules and (later) datasets. Submodules import torch only where they need it."""
