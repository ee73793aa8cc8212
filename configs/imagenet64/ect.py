"""ECT (easy consistency tuning) on class-conditional ImageNet-64 from EDM2's published S network, as the official
code's ImageNet run: locuslab/ect, branch `imgnet`, `run_imgnet_ecm.sh` with `ct_train.py`'s preset `edm2-img64-s`
(batch 128, 100k steps, 12.8 Mimg). Reference FID (1 / 2 NFE) 2.49 / 1.67 is ECM-XL's, as sCM's Table 1 cites ECT;
the official README's XL checkpoint was trained at batch 1024 for 100k steps. For XL, ct_train.py's preset
`edm2-img64-xl` changes model_channels to 384, lr to 7e-4 and dropout to 0.5, starting from EDM2's XL network.

  python -m fewstep_jax.tools.import_checkpoint --src=edm2-img64-s-1073741-0.075.pkl --out=teachers/edm2_img64_s
  python -m fewstep_jax.main --config=configs/imagenet64/ect.py --workdir=runs/imagenet64_ect \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='ect', network='edm2_unet', dataset='tfds')
  common.accelerator_run(config)
  # Preset edm2-img64-s: dropout 0.40 in the blocks at 16x16 and coarser (dropres=16); EDM2's forced weight
  # normalisation, as its training/networks_edm2.py; no uncertainty head in the loss.
  config.network.update(common.EDM2_S, dropout=0.4, dropout_res=16, logvar_head=False, forced_weight_norm=True)
  # training/loss.py `ECMLoss` with ct_train.py's values: ln t ~ N(-0.8, 1.6^2), the sigmoid t -> r mapping with
  # q = 4, k = 8, b = 1, a stage per 500 ticks of 6.4 kimg (3.2 Mimg: 25k steps at batch 128), pseudo-Huber
  # c = 0.06 on the summed squared error, weight (t^2 + sigma_d^2) / (t sigma_d)^2 ('snrpk', EDM's lambda);
  # 2-step sampling at mid_t = 1.526.
  config.method.update(init_from=common.EDM2_TEACHER, p_mean=-0.8, p_std=1.6, q=4.0, k=8.0, b=1.0,
                       stage_steps=25_000, huber_c=0.06, weighting='edm', sample_sigmas=(1.526,))
  # fp16=0: float32.
  config.train.update(batch_size=128, num_steps=100_000, compute_dtype='float32')
  # Adam lr 1e-3, betas (0.9, 0.99), eps 1e-8, EDM2's inverse-square-root decay after 2000 batches with no ramp-up;
  # the evaluated EMA is its TraditionalEMA at 0.9999, beside the power-function EMAs (sigma_rel 0.010, 0.050, 0.100)
  # it saves as snapshots.
  config.optim.update(name='adam', lr=1e-3, b1=0.9, b2=0.99, eps=1e-8, schedule='inverse_sqrt', warmup_steps=0,
                      decay_ref_steps=2000, ema_rates=(0.9999,), ema_stds=(0.010, 0.050, 0.100))
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config
