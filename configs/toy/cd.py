"""CD (consistency distillation, Song et al. 2023) on 2-D toy data from the toy EDM teacher (one Heun step of its ODE
per pair), the student starting from the teacher's weights as the paper's does, 18-point grid, EMA target 0.95,
squared L2; 1, 2 and 4 NFE.

Started from scratch instead (--config.method.init_from=), the 3000-step comparison run gets 1-NFE samples as good
(sliced W2 0.0029) but 2- and 4-NFE ones spread outwards (0.018 and 0.048, 33% and 48% of the samples off the
support), with the EDM or the flow-matching teacher alike: the re-noised second step asks f at sigma = 0.821, which a
student trained from scratch for 3000 steps has not learnt to denoise; from the teacher's weights 0.0024 / 0.0046 /
0.0019.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/cd.py --workdir=runs/toy_cd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='cd', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights the student starts from.
  config.method.update(teacher='runs/toy_edm', init_from='runs/toy_edm')
  return config
