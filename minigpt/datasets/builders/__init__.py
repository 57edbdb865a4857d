"""Registered dataset builders. Importing this package imports every module in it, so a new builder
file registers itself without being listed anywhere."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
