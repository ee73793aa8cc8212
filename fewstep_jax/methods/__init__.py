"""Methods, registered by name. Importing this package registers every method module listed here."""
from fewstep_jax.methods.registry import METHODS, build_method, method_defaults, register
from fewstep_jax.methods import (  # noqa: F401  (registration)
    consistency, consistency_fm, dmd, edm, flow_matching, meanflow, reflow, scm, shortcut, sid, split_meanflow, tdm,
    twinflow)
