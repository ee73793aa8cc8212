"""Methods, registered by name. Importing this package imports every module in it, which registers its methods:
a new method is one new file here (no list to edit)."""
import importlib
import pkgutil

from fewstep_jax.methods.registry import (METHODS, build_method, method_class, method_defaults, register,
                                         require_data_images)

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
  importlib.import_module(f'{__name__}.{_module.name}')
