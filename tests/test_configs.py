"""Every experiment config loads, is locked, and builds its method and state shapes (no data, no compile)."""
import glob

import jax
import pytest

from conftest import REPO, described_teachers
from fewstep_jax.config_base import load_config
from fewstep_jax.methods import build_method

CONFIGS = sorted(path for path in glob.glob(str(REPO / 'configs/*/*.py')) if not path.endswith('/common.py'))
# The per-example shape and label count each dataset gives the method.
DATA = {('toy', ''): ((2,), 0), ('digits', ''): ((8, 8, 1), 10), ('tfds', 'cifar10'): ((32, 32, 3), 10),
        ('tfds', 'imagenet_resized/64x64'): ((64, 64, 3), 1000), ('latents', ''): ((32, 32, 4), 1000)}


def test_there_are_configs_for_each_dataset():
  assert {path.split('/')[-2] for path in CONFIGS} >= {'toy', 'digits', 'cifar10', 'imagenet64',
                                                       'imagenet256_latent'}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda path: '/'.join(path.split('/')[-2:]))
def test_config_builds_its_method(path):
  config = load_config(path)
  with pytest.raises(KeyError):
    load_config(path, {'train.no_such_field': 1})
  if config.data.name == 'reflow_pairs':  # Pairs carry the shape of the dataset their teacher learned.
    folder = path.split('/')[-2]
    data_shape, num_classes = DATA[('tfds', folder) if folder == 'cifar10' else (folder, '')]
  else:
    data_shape, num_classes = DATA[config.data.name, config.data.tfds_name]
  if not config.data.conditional:
    num_classes = 0
  method = build_method(config, data_shape=data_shape, num_classes=num_classes,
                        inputs=described_teachers(config, data_shape, num_classes))
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0))
  assert int(state.step.size) == 1
  assert config.eval.params in ['params'] + list(state.nets['student'].ema)


# Paper-row values, each with where it comes from (checked against the papers' tables and the official code).
PAPER_ROWS = [
    ('cifar10/cd.py', {'method.target_ema': 'none', 'optim.name': 'radam', 'optim.lr': 4e-4,
                       'data.conditional': False, 'method.init_from': 'teachers/edm_cifar10_uncond_ve',
                       'network.embedding_type': 'fourier', 'network.dropout': 0.0,
                       'train.batch_size': 512}),  # CM Table 3, app. C; cifar10_ve_cd.py
    ('imagenet64/cd.py', {'network.model_channels': 192, 'network.num_res_blocks': 3, 'network.num_head_channels': 64,
                          'network.resblock_updown': True, 'method.teacher': 'teachers/cm_imagenet64',
                          'optim.ema_rates': (0.999943,), 'optim.name': 'radam', 'method.mu0': 0.95,
                          'method.sample_sigmas': (1.382,)}),  # CM Table 3; official scripts/launch.sh --ts 0,22,39
    ('imagenet64/ct.py', {'optim.ema_rates': (0.999943,), 'method.s1': 200, 'method.sample_sigmas': (1.913,)}),
    ('cifar10/sct.py', {'data.conditional': False, 'optim.name': 'radam', 'optim.b2': 0.99}),  # sCM Table 1, G.2
    ('imagenet64/sct.py', {'train.num_steps': 400_000, 'optim.b2': 0.99, 'optim.eps': 1e-11,
                           'optim.decay_ref_steps': 35_000, 'optim.ema_stds': (0.05,),
                           'network.model_channels': 192}),  # sCM Tables 4 and 8 (EDM2-S)
    ('imagenet64/scd.py', {'train.num_steps': 400_000, 'optim.b2': 0.99, 'optim.eps': 1e-11, 'method.p_std': 1.6,
                           'optim.decay_ref_steps': 35_000, 'optim.ema_stds': (0.05,),
                           'network.model_channels': 192}),  # sCM Tables 4 and 8 (EDM2-S)
    ('imagenet64/ect.py', {'method.p_mean': -0.8, 'method.p_std': 1.6, 'method.huber_c': 0.06, 'method.q': 4.0,
                           'method.stage_steps': 25_000, 'method.sample_sigmas': (1.526,), 'optim.lr': 1e-3,
                           'optim.b2': 0.99, 'optim.decay_ref_steps': 2000, 'network.dropout': 0.4,
                           'network.dropout_res': 16, 'network.model_channels': 192,
                           'train.batch_size': 128}),  # ECT imgnet branch, run_imgnet_ecm.sh, preset edm2-img64-s
    ('cifar10/sid.py', {'method.t_max': 0.8, 'method.sigma_init': 2.5, 'method.alpha': 1.2}),  # SiD run_sid.sh
    ('imagenet64/sid.py', {'optim.lr': 4e-6, 'method.critic_optim.lr': 4e-6, 'train.batch_size': 8192}),
    ('imagenet64/dmd2.py', {'eval.params': 'params', 'method.max_level': 0.98, 'method.student_every': 5}),
    ('cifar10/diff_instruct.py', {'method.matching_sigmas': 'lognormal', 'method.sigma_init': 1.0,
                                  'train.batch_size': 128, 'data.conditional': False}),  # DI README
    ('imagenet64/edm.py', {'optim.lr': 1e-4, 'method.label_dropout': 0.0}),  # EDM README, imagenet-64x64-cond-adm
    ('imagenet256_latent/meanflow.py', {'method.omega': 0.2, 'method.kappa': 0.92,
                                        'method.guidance_t_end': 0.75}),  # MeanFlow XL/2
    ('cifar10/f_distill.py', {'method.divergence': 'kl', 'method.ratio_ema': 0.0, 'method.gan_generator_weight': 1e-3,
                              'train.batch_size': 2048, 'method.min_level': 0.002}),  # FastGen f_distill_cifar10
    ('imagenet64/f_distill.py', {'method.divergence': 'js', 'method.ratio_ema': 0.5, 'optim.lr': 2e-6,
                                 'method.gan_generator_weight': 3e-3, 'train.batch_size': 512}),  # FastGen in64
    ('cifar10/tcm.py', {'method.transition_sigma': 1.0, 'method.boundary_fraction': 0.25, 'method.boundary_weight': 0.1,
                        'method.t_df': 0.01, 'method.t_std': 0.2, 'optim.lr': 5e-5,
                        'train.batch_size': 1024}),  # NVlabs/TCM README
    ('imagenet64/tcm.py', {'method.ratio': 0.9961, 'method.huber_c': 0.06, 'method.weighting': 'edm',
                           'optim.lr': 5e-4, 'optim.decay_ref_steps': 8000, 'optim.ema_stds': (0.05,),
                           'network.dropout': 0.4, 'train.batch_size': 1024}),  # TCM README, ImageNet stage 2
    ('cifar10/ctm.py', {'method.num_scales': 18, 'method.heun_steps': 17, 'method.target_ema': 0.999,
                        'optim.lr': 4e-4, 'train.batch_size': 256}),  # ctm-cifar10 commands
    ('imagenet64/ctm.py', {'method.num_scales': 40, 'method.heun_steps': 39, 'train.batch_size': 1440,
                           'network.two_times': True, 'network.dropout': 0.0,
                           'method.teacher': 'teachers/cm_imagenet64'}),  # sony/ctm
    ('imagenet64/multistep_cd.py', {'method.segments': 8, 'method.s0': 64, 'method.s1': 1280,
                                    'method.weighting': 'snr_plus_one', 'train.batch_size': 2048}),  # Heek A.1
]


@pytest.mark.parametrize('path,values', PAPER_ROWS, ids=[row[0] for row in PAPER_ROWS])
def test_paper_row_configs_carry_the_papers_values(path, values):
  config = load_config(str(REPO / 'configs' / path))
  for dotted, want in values.items():
    node = config
    for name in dotted.split('.'):
      node = node[name]
    assert (tuple(node) if isinstance(want, tuple) else node) == want, (path, dotted, node)


def test_a_stored_config_from_before_a_new_hyperparameter_takes_its_default():
  """A run's config.json written before a field existed (here CTM's gan_weight, the eval schedule) loads with that
  field's default, so that eval and sample of older runs keep working; stored values win."""
  import json
  from fewstep_jax.config_base import config_from_json
  stored = json.loads(load_config(str(REPO / 'configs/toy/ctm.py')).to_json())
  del stored['method']['gan_weight'], stored['eval']['schedule']
  stored['method']['dsm_weight'] = 0.5
  config = config_from_json(stored)
  assert config.method.gan_weight == 0.0 and config.eval.schedule == '' and config.method.dsm_weight == 0.5
  assert config.is_locked
