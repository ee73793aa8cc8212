"""CD (consistency distillation, LPIPS) on unconditional CIFAR-10, for accelerators; reference FID (1 / 2 NFE):
3.55 / 2.93 (CM, Table 1). As CM's Table 3 and appendix C and its consistency_models_cifar10 configs/cifar10_ve_cd.py:
the online network as its own target (mu = 0, `target_ema='none'`), N = 18, RAdam lr 4e-4, batch 512, EMA 0.9999,
800k steps, no dropout, the student starting from the teacher's weights.

The teacher: CM distils its own NCSN++ trained with EDM's recipe (configs/cifar10_k_ve.py), published as a JAX
checkpoint that is not ported; EDM's published unconditional NCSN++ (the same architecture, preconditioning and
training recipe) stands in for it.

  python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-uncond-ve.pkl --out=teachers/edm_cifar10_uncond_ve
  python -m fewstep_jax.main --config=configs/cifar10/cd.py --workdir=runs/cifar10_cd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='cd', network='edm_songunet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_NCSNPP)
  # CM (Song et al. 2023), Table 3 and appendix C (unconditional): RAdam lr 4e-4 without warmup or decay,
  # batch 512, EMA 0.9999, the online network as the target (mu = 0), LPIPS, 18 grid points; the
  # student starts from the teacher's weights.
  config.method.update(distance='lpips', init_from=common.EDM_NCSNPP_TEACHER, target_ema='none',
                       teacher=common.EDM_NCSNPP_TEACHER)
  config.train.update(batch_size=512, num_steps=800_000)
  config.optim.update(ema_rates=(0.9999,), lr=4e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config
