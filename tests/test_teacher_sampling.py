"""Sampling an imported text-to-image teacher (method 'teacher', data 'pipeline_prompts', configs/sd15/teacher.py and
configs/sdxl/teacher.py) on tiny random pipelines in the published layout (tiny_pipelines.py): the pipelines' null
conditions and SDXL's time_ids, the SD-VAE's folder layouts and scaling factors, guidance 1 as the unguided sampler,
diffusers' 'leading' grid, and the whole command (import, then --mode=sample writing the images)."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

import tiny_pipelines
from conftest import REPO, error_line, run_main
from fewstep_jax import errors, paths, sampling, text, timesteps, trainer
from fewstep_jax.conditions import Conditioning
from fewstep_jax.config_base import load_config
from fewstep_jax.inputs import Teacher
from fewstep_jax.methods import build_method
from fewstep_jax.methods import teacher as teacher_method
from fewstep_jax.nn import sd_vae

SD15, SDXL = os.path.join(REPO, 'configs/sd15/teacher.py'), os.path.join(REPO, 'configs/sdxl/teacher.py')


def test_the_vae_loads_from_sdxls_vae_folder_its_fp16_variant_and_the_fp16_fix_layout(tmp_path):
  params = tiny_pipelines.vae_params()
  sdxl = dict(tiny_pipelines.VAE_CONFIG, scaling_factor=0.13025, force_upcast=True)
  tiny_pipelines.write_vae(tmp_path / 'sdxl' / 'vae', params, sdxl)
  tiny_pipelines.write_vae(tmp_path / 'fp16' / 'vae', params, sdxl, sd_vae.WEIGHT_FILES[1], np.float16)
  # madebyollin/sdxl-vae-fp16-fix: other weights in the same layout, config.json and the diffusers file at the top,
  # beside a single-file checkpoint in the original LDM names, which is not read.
  fix = jax.tree.map(lambda leaf: 0.5 * leaf, params)
  tiny_pipelines.write_vae(tmp_path / 'fix', fix, dict(sdxl, force_upcast=False))
  save_file({'encoder.down.0.block.0.norm1.weight': np.ones(8, np.float32)},
            str(tmp_path / 'fix' / 'sdxl_vae.safetensors'))
  tiny_pipelines.write_vae(tmp_path / 'sd15' / 'vae', params, tiny_pipelines.VAE_CONFIG)  # No scaling_factor key.

  for folder, want, rounding in (('sdxl', params, np.float32), ('sdxl/vae', params, np.float32),
                                 ('fp16', params, np.float16), ('fix', fix, np.float32)):
    vae, loaded = sd_vae.load(str(tmp_path / folder))
    assert (vae.block_out_channels, vae.norm_num_groups, vae.layers_per_block) == ((8, 16), 4, 1), folder
    for got, expected in zip(jax.tree.leaves(loaded), jax.tree.leaves(want)):
      assert got.dtype == np.float32
      np.testing.assert_array_equal(got, expected.astype(rounding).astype(np.float32), err_msg=folder)
    assert sd_vae.latent_scaling(str(tmp_path / folder)) == (0.13025, 0.0), folder
  assert sd_vae.latent_scaling(str(tmp_path / 'sd15')) == (0.18215, 0.0)  # diffusers' default.
  with pytest.raises(errors.InputNotFoundError, match=r'holds no SD-VAE weights: none of diffusion_pytorch_model'):
    sd_vae.load(str(tmp_path))
  tiny_pipelines.write_json(str(tmp_path / 'other' / 'config.json'), {'_class_name': 'AutoencoderTiny'})
  save_file(sd_vae.to_state_dict(params), str(tmp_path / 'other' / sd_vae.WEIGHT_FILES[0]))
  with pytest.raises(errors.ConfigError, match='is the config of AutoencoderTiny, not of AutoencoderKL'):
    sd_vae.load(str(tmp_path / 'other'))


def test_sd15s_null_is_the_empty_prompt_and_sdxls_zeros_with_the_pooled_text_and_time_ids(tmp_path):
  prompts = ['a red cube', 'a blue ball']
  sd15 = tiny_pipelines.sd15_pipeline(tmp_path / 'sd15', 'digits')
  encoders = text.load_pipeline(sd15)
  conditioning = text.pipeline_conditioning(sd15, prompts, encoders=encoders)
  assert sorted(conditioning.prompts) == ['tokens'] and conditioning.prompts['tokens'].shape == (2, 77, 32)
  np.testing.assert_array_equal(conditioning.prompts['tokens'], text.encode(encoders, prompts)[0])
  np.testing.assert_array_equal(conditioning.null_text['tokens'], text.encode(encoders, [''])[0][0])
  assert np.abs(conditioning.null_text['tokens']).max() > 0.1

  sdxl = tiny_pipelines.sdxl_pipeline(tmp_path / 'sdxl')
  encoders = text.load_pipeline(sdxl)
  conditioning = text.pipeline_conditioning(sdxl, prompts, image_size=(1024, 768), encoders=encoders)
  assert {key: value.shape for key, value in conditioning.prompts.items()} == {
      'tokens': (2, 77, 16 + 32), 'pooled': (2, 32), 'time_ids': (2, 6)}
  np.testing.assert_array_equal(conditioning.prompts['time_ids'], [[1024, 768, 0, 0, 1024, 768]] * 2)
  null = conditioning.null_text
  assert not null['tokens'].any() and not null['pooled'].any() and null['pooled'].shape == (32,)
  np.testing.assert_array_equal(null['time_ids'], [1024, 768, 0, 0, 1024, 768])  # The prompts' own sizes.
  tiny_pipelines.write_json(os.path.join(sdxl, 'model_index.json'), {'force_zeros_for_empty_prompt': False})
  empty = text.pipeline_conditioning(sdxl, prompts, image_size=(1024, 768), encoders=encoders).null_text
  states, pooled = text.encode(encoders, [''])
  np.testing.assert_array_equal(empty['tokens'], states[0])
  np.testing.assert_array_equal(empty['pooled'], pooled[0])

  # The data 'pipeline_prompts' reads the latent shape, the image size and the VAE's scaling factor.
  from fewstep_jax.data import build_data, data_defaults
  config = data_defaults()
  config.update(name='pipeline_prompts', pipeline=str(tmp_path / 'sdxl'), prompts_file=str(tmp_path / 'p.txt'))
  (tmp_path / 'p.txt').write_text('a red cube\n\n  a blue ball  \n')
  pipeline = build_data(config, global_batch_size=2, seed=0)
  assert (pipeline.data_shape, pipeline.image_size) == ((8, 8, 4), (16, 16))
  assert pipeline.latent_vae[0] == str(tmp_path / 'sdxl') and float(pipeline.latent_vae[1].scale) == np.float32(0.13025)
  np.testing.assert_array_equal(pipeline.conditioning.prompts['time_ids'][0], [16, 16, 0, 0, 16, 16])
  with pytest.raises(errors.ConfigError, match="holds prompts, not training examples"):
    pipeline.next_batch()
  config.pipeline = str(tmp_path / 'absent')
  with pytest.raises(errors.InputNotFoundError, match=r"data.pipeline='.*absent' is not a folder; nothing is downl"):
    build_data(config, global_batch_size=2, seed=0)
  (tmp_path / 'p.txt').write_text('\n \n')
  with pytest.raises(errors.ConfigError, match='holds no prompt: write the prompts one a line'):
    text.read_prompts(str(tmp_path / 'p.txt'))


def _analytic_teacher(data_shape):
  """A Teacher with the 'sd' readout whose raw network is a formula of (x, timestep, tokens): the sampler's
  arithmetic without a network to compile."""
  def raw(params, x, timestep, r, y, key):
    del r, key
    text_term = jnp.mean(y['tokens'], axis=(1, 2)).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.tanh(params['a'] * x + text_term + paths.expand_to(timestep / 1000.0, x))
  return Teacher(network=ml_collections.ConfigDict({'name': 'sd_unet'}), readout=paths.readout('sd'),
                 data_shape=data_shape, num_classes=0, params={'a': jnp.float32(0.7)}, apply=raw)


def test_guidance_1_is_the_unguided_sampler_and_guidance_mixes_the_nulls_prediction():
  shape = (4, 4, 1)
  rng = np.random.default_rng(0)
  conditioning = Conditioning('text', null_text={'tokens': np.zeros((3, 2), np.float32)},
                              prompts={'tokens': rng.standard_normal((2, 3, 2)).astype(np.float32)})
  teacher = _analytic_teacher(shape)
  config = load_config(SD15)
  method = build_method(config, data_shape=shape, num_classes=0, inputs={'teacher': teacher},
                        conditioning=conditioning)
  y = conditioning.for_samples(np.arange(2))
  noise = jnp.asarray(rng.standard_normal((2,) + shape), jnp.float32)
  denoise = teacher.prediction(paths.EDMPath(), 'x0')
  grid = teacher_method.ddpm_leading_grid(method, 4)

  def unguided_euler(guidance):  # Euler on the same grid, the guided mix written out.
    def drift(x, sigma):
      cond, null = denoise(teacher.params, x, sigma, y), denoise(teacher.params, x, sigma, conditioning.null(y))
      return (x - (null + guidance * (cond - null))) / paths.expand_to(sigma, x)
    return sampling.euler_solve(drift, np.sqrt(grid[0] ** 2 + 1.0) * noise, grid)

  for guidance, nfe in ((1.0, 4), (7.5, 8)):
    plan = method.sampling_plan(nfe, True, guidance=guidance)
    assert int(plan.steps.num_steps) == 4
    ours = method.sample(teacher.params, jax.random.key(0), 2, plan, y, noise=noise)
    np.testing.assert_allclose(ours, unguided_euler(guidance), rtol=1e-5, atol=1e-5)
  plain = method.sample(teacher.params, jax.random.key(0), 2, method.sampling_plan(4, True, guidance=1.0), y,
                        noise=noise)
  assert np.abs(np.asarray(ours) - np.asarray(plain)).max() > 1e-3  # Guidance changed the samples.

  # diffusers' 'leading' spacing with steps_offset 1: 50 steps are timesteps 981, 961, ..., 1 of SD's schedule.
  np.testing.assert_array_equal(timesteps.leading_timesteps(50), np.arange(981, 0, -20))
  np.testing.assert_allclose(teacher_method.ddpm_leading_grid(method, 50),
                             np.append(paths.ddpm_scaled_linear_sigmas()[np.arange(981, 0, -20)], 0.0))


def test_the_teacher_method_refuses_training_and_a_grid_its_teachers_readout_has_not(tmp_path):
  config = load_config(SD15)
  with pytest.raises(errors.ConfigError, match=r"method 'teacher' trains nothing: .* --mode=sample"):
    trainer.train(config, str(tmp_path / 'run'))
  edm = Teacher(network=ml_collections.ConfigDict({'name': 'mlp'}), readout=paths.readout('edm'), data_shape=(2,),
                num_classes=0)
  with pytest.raises(errors.ConfigError, match=r"the teacher's readout 'edm' has none .* use method.grid='karras'"):
    build_method(config, data_shape=(2,), num_classes=0, inputs={'teacher': edm})


@pytest.mark.slow  # 30 s (SD 1.5) and 50 s (SDXL) of CPU, 90 s and 150 s on 2 shared cores: the import command, then
# --mode=sample compiling a guided U-Net (the digits preset behind the SD 1.5 pipeline, sdxl_tiny behind SDXL's).
@pytest.mark.parametrize('config_file, pipeline, sampler', [
    (SD15, lambda root: tiny_pipelines.sd15_pipeline(root, 'digits'), 'euler_guidance7_5'),
    (SDXL, tiny_pipelines.sdxl_pipeline, 'euler_guidance5')], ids=['sd15', 'sdxl'])
def test_the_teacher_config_samples_an_imported_pipeline_at_two_prompts(config_file, pipeline, sampler, tmp_path):
  src = pipeline(tmp_path / 'pipeline')
  teacher = str(tmp_path / 'teacher')
  run_main([f'--src={src}', f'--out={teacher}'], module='fewstep_jax.tools.import_checkpoint')
  (tmp_path / 'prompts.txt').write_text('a red cube\na blue ball\n')
  workdir = str(tmp_path / 'samples')
  result = run_main([f'--config={config_file}', f'--workdir={workdir}', '--mode=sample',
                     f'--config.method.teacher={teacher}', f'--config.data.pipeline={src}',
                     f'--config.data.prompts_file={tmp_path / "prompts.txt"}', '--config.eval.nfe=(4,)',
                     '--config.eval.sample_grid=2', '--config.eval.batch_size=2'])
  image = os.path.join(workdir, 'samples', f'step_0000000_nfe4_{sampler}.png')
  assert f'written: {image}' in result.stdout
  grid = np.asarray(Image.open(image))
  assert grid.ndim == 3 and min(grid.shape[:2]) >= 16 and grid.std() > 0  # Two decoded 16 x 16 images.
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))  # Nothing trained, nothing saved.
  refused = run_main([f'--config={config_file}', f'--workdir={workdir}', f'--config.method.teacher={teacher}'],
                     check=False)
  assert error_line(refused) == ("error: method 'teacher' trains nothing: it samples its inputs; run it with "
                                 '--mode=sample (or --mode=eval)')
  imported = run_main([f'--workdir={teacher}', '--mode=sample'], check=False)  # The imported run itself.
  assert error_line(imported).startswith(f'error: {teacher} holds a network imported from {src}, not a trained run: '
                                         'sample it as a teacher')
