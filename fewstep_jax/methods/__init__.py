"""Methods, registered by name. Importing this package registers every method module listed here."""
from fewstep_jax.methods.registry import METHODS, build_method, method_defaults, register
from fewstep_jax.methods import edm, flow_matching, meanflow, shortcut, split_meanflow  # noqa: F401  (registration)
