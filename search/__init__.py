"""Budget-driven compression search. Importing the package first makes torchvision importable on the CPU torch it
pins (torchvision_cpu.py says why), before transformers or timm look for it."""
from .torchvision_cpu import install as _install_torchvision_finder

_install_torchvision_finder()
