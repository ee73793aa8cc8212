"""Importing published networks: PyTorch files read without PyTorch and without running their code, EDM's networks
round-tripped through every file format into a run directory that opens as a Teacher, errors that name the
parameter, and an imported EDM-architecture teacher distilled through the entry point. (The ports' outputs equal EDM's
own code's: experiments/parity/edm.py.)"""
import io
import json
import os
import pickle

import jax
from flax import traverse_util
import jax.numpy as jnp
import numpy as np
import pytest

import torch_format
from conftest import REPO, error_line, run_main
from fewstep_jax import errors, nn, runs
from fewstep_jax import weight_files as weights
from fewstep_jax.tools import import_checkpoint as import_weights
from fewstep_jax.weight_files import torch_files

TINY = {
    # EDM class name, EDM's constructor arguments at a tiny size.
    'ddpmpp': ('SongUNet', dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                                embedding_type='positional', channel_mult_noise=1, encoder_type='standard',
                                decoder_type='standard', resample_filter=[1, 1], augment_dim=9, dropout=0.13)),
    'ncsnpp': ('SongUNet', dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                                embedding_type='fourier', channel_mult_noise=2, encoder_type='residual',
                                decoder_type='skip', resample_filter=[1, 3, 3, 1])),
    'adm': ('DhariwalUNet', dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                                 dropout=0.1)),
    'edm2': ('EDM2UNet', dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                              logvar_channels=8, channel_mult_noise=None, clip_act=256)),
    'sit': ('SiT', dict(depth=1, hidden_size=16, patch_size=2, num_heads=2)),
    'cm': ('UNetModel', dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_ds=[2],
                             num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True, dropout=0.1,
                             image_size=8)),
}
SHAPE, CLASSES = (8, 8, 1), 10


def tiny_params(arch, seed=0):
  class_name, fields = TINY[arch]
  network = import_weights.network_config(class_name, {k: v for k, v in fields.items() if k != 'image_size'})
  abstract = import_weights.abstract_params(network, SHAPE, CLASSES)
  rng = np.random.default_rng(seed)  # numpy: jax.random per leaf would compile a kernel per shape.
  params = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32), abstract)
  return class_name, fields, network, params


def edm_kwargs(class_name, fields):
  """The constructor arguments EDM's EDMPrecond (EDM2's Precond) records."""
  edm = {} if class_name == 'EDM2UNet' else {'sigma_min': 0, 'sigma_max': float('inf'), 'model_type': class_name}
  return dict(img_resolution=SHAPE[0], img_channels=SHAPE[2], label_dim=CLASSES, use_fp16=False, sigma_data=0.5,
              **edm, **fields)


def save_pickle(state_dict, path, class_name, fields, positional=0):
  """EDM's (EDM2's) network pickle; its preconditioning's first `positional` arguments recorded by position."""
  edm2 = class_name == 'EDM2UNet'
  preconditioning = import_weights.PRECONDITIONINGS['Precond' if edm2 else 'EDMPrecond']
  kwargs = edm_kwargs(class_name, fields)
  names = preconditioning.parameters[:positional]
  torch_format.save_nvlabs_pickle(state_dict, path, class_name,
                                  {key: value for key, value in kwargs.items() if key not in names},
                                  buffers=('freqs', 'phases'), precond='Precond' if edm2 else 'EDMPrecond',
                                  inner=None if edm2 else 'model', init_args=[kwargs[name] for name in names])


def test_torch_layouts_read_without_torch(tmp_path):
  state_dict = {'a.weight': np.arange(12, dtype=np.float32).reshape(3, 4), 'b': np.arange(5, dtype=np.int64),
                'c': np.float16([1.5, -2.0]), 'strided': np.arange(6, dtype=np.float32).reshape(2, 3).T}
  for save, name in ((torch_format.save_zip, 'zip.pt'), (torch_format.save_legacy, 'legacy.pth')):
    save(state_dict, str(tmp_path / name))
    loaded = weights.read_state_dict(str(tmp_path / name))
    assert sorted(loaded) == sorted(state_dict)
    for key, value in state_dict.items():
      assert loaded[key].dtype == value.dtype and np.array_equal(loaded[key], value), (name, key)
  assert torch_files.file_kind(str(tmp_path / 'zip.pt')) == 'zip'
  assert torch_files.file_kind(str(tmp_path / 'legacy.pth')) == 'legacy'


def test_the_unpickler_refuses_unknown_callables_and_reads_tensors_and_dicts(tmp_path):
  marker = tmp_path / 'ran'
  for name in ('evil.pkl', 'evil.pth', 'evil.bin'):
    path = str(tmp_path / name)
    torch_format.save_code_running_pickle(path, str(marker))
    with pytest.raises(errors.RefusedWeightsError, match=rf'^refused {path}: loading it would call (posix|os)\.system '
                       r'\(not a tensor.*nothing in it was run\. Take the weights as a state dict from a source you '
                       'trust'):
      weights.read_state_dict(path)
  assert not marker.exists()  # Nothing ran.
  with pytest.raises(errors.RefusedWeightsError, match=r'would call builtins\.eval '):
    torch_files.SafeUnpickler(io.BytesIO(b'cbuiltins\neval\n(S"1"\ntR.'), 'crafted').load()
  # NVlabs' code named directly (a class that is not persistent): the advice says which pickles are read.
  with pytest.raises(errors.RefusedWeightsError,
                     match=r'call training\.networks\.EDMPrecond .* classes are persistent'):
    torch_files.SafeUnpickler(io.BytesIO(b'ctraining.networks\nEDMPrecond\n)\x81.'), 'snapshot.pkl').load()
  with pytest.raises(errors.RefusedWeightsError, match=r'call a numpy array of Python objects'):
    torch_files.SafeUnpickler(io.BytesIO(b'cnumpy\ndtype\n(S"O"\ntR.'), 'objects.pkl').load()

  plain = tmp_path / 'plain.pkl'
  plain.write_bytes(pickle.dumps({'nested': {'x': [1, 2.5, 'name']}, 'n': 3}))
  assert torch_files.load(str(plain)) == {'nested': {'x': [1, 2.5, 'name']}, 'n': 3}


def test_damaged_and_missing_weight_files_are_told_apart_from_refused_ones(tmp_path):
  from safetensors.numpy import save_file
  state_dict = {'w': np.ones((16, 16), np.float32)}
  writers = {'zip.pt': torch_format.save_zip, 'legacy.pth': torch_format.save_legacy, 'net.safetensors': save_file,
             'net.npz': lambda arrays, path: np.savez(path, **arrays)}
  for name, write in writers.items():
    path = str(tmp_path / name)
    write(state_dict, path)
    torch_format.cut_short(path)
    with pytest.raises(errors.UnreadableWeightsError, match=rf'^{path} (is a zip archive .* cut short|is damaged: '
                       r'storage 0 is cut short|cannot be read as .*: it is damaged \(a partial download\?\))'):
      weights.read_state_dict(path)
  (tmp_path / 'text.pt').write_bytes(b'Pnot a storage\n.')  # A persistent id that no PyTorch file holds.
  with pytest.raises(errors.UnreadableWeightsError, match='unknown persistent id'):
    weights.read_state_dict(str(tmp_path / 'text.pt'))
  with pytest.raises(FileNotFoundError, match='absent.pkl.* not found; nothing is downloaded'):
    import_weights.read_nvlabs_pickle(str(tmp_path / 'absent.pkl'))


def test_a_refused_file_ends_the_import_command_in_one_line_and_writes_nothing(tmp_path):
  marker, src, out = tmp_path / 'ran', str(tmp_path / 'snapshot.pkl'), tmp_path / 'teacher'
  torch_format.save_code_running_pickle(src, str(marker))
  result = run_main([f'--src={src}', f'--out={out}'], module='fewstep_jax.tools.import_checkpoint', check=False)
  assert error_line(result).startswith(f'error: refused {src}: loading it would call ')
  assert not out.exists() and not marker.exists()


def test_a_failed_write_leaves_no_run_directory(tmp_path, monkeypatch):
  class FullDisk:
    def __init__(self, *args, **kwargs):
      pass

    def save(self, *args, **kwargs):
      raise errors.DiskFullError('no space left')

    close = wait = lambda self: None

  _, _, network, params = tiny_params('adm')
  imported = import_weights.Imported(network, import_weights.paths.readout('edm'), SHAPE, CLASSES, params, 'net.pt')
  monkeypatch.setattr(import_weights, 'Checkpointer', FullDisk)
  with pytest.raises(errors.DiskFullError):
    import_weights.write_run(str(tmp_path / 'teacher'), imported)
  assert not (tmp_path / 'teacher').exists()  # A retry is not refused as "already holds a run".


@pytest.mark.parametrize('arch', ['ddpmpp', 'edm2'])
def test_a_pickle_of_a_network_constructed_with_positional_arguments_imports(arch, tmp_path):
  # EDMPrecond(8, 1, 10, False, 0, inf, 0.5, 'SongUNet', ...) records its arguments in _init_args, by position:
  # NVlabs' signatures name them (EDM2's sixth, logvar_channels, is a network field here).
  class_name, fields, network, params = tiny_params(arch)
  state_dict = import_weights.to_state_dict(class_name, params)
  positional = len(import_weights.PRECONDITIONINGS['Precond' if arch == 'edm2' else 'EDMPrecond'].parameters)
  path = str(tmp_path / 'net.pkl')
  save_pickle(state_dict, path, class_name, fields, positional)
  assert torch_files.load(path)['ema'].state['_init_kwargs'].keys().isdisjoint({'img_resolution', 'sigma_data'})
  imported = import_weights.read_nvlabs_pickle(path)
  assert (imported.data_shape, imported.num_classes) == (SHAPE, CLASSES)
  assert imported.network.to_dict() == network.to_dict()
  for got, want in zip(jax.tree.leaves(imported.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)


def test_recorded_constructor_arguments_are_bound_as_python_binds_them():
  module = torch_files.ModuleStub('persistent.EDMPrecond', {'_init_args': (32, 3), '_init_kwargs': {'label_dim': 10}})
  assert torch_files.constructor_arguments(module, ('img_resolution', 'img_channels', 'label_dim')) == {
      'img_resolution': 32, 'img_channels': 3, 'label_dim': 10}
  with pytest.raises(ValueError, match='constructed with 2 positional arguments, but its constructor takes 1'):
    torch_files.constructor_arguments(module, ('img_resolution',))
  with pytest.raises(ValueError, match=r"records \['label_dim'\] both by position and by keyword"):
    torch_files.constructor_arguments(module, ('img_resolution', 'label_dim'))


@pytest.mark.parametrize('arch', sorted(TINY))
def test_every_architecture_round_trips_through_every_format_into_a_teacher(arch, tmp_path):
  from safetensors.numpy import save_file
  class_name, fields, network, params = tiny_params(arch)
  state_dict = import_weights.to_state_dict(class_name, params)
  # As EDMPrecond.state_dict() names them (EDM2's state dict is its Precond's already, SiT has no wrapper).
  edm = class_name in ('SongUNet', 'DhariwalUNet')
  prefixed = {f'model.{key}': value for key, value in state_dict.items()} if edm else state_dict
  files = {'safetensors': tmp_path / 'net.safetensors', 'npz': tmp_path / 'net.npz', 'zip': tmp_path / 'net.pt',
           'legacy': tmp_path / 'net.pth', 'pickle': tmp_path / 'net.pkl'}
  save_file(state_dict, str(files['safetensors']))
  np.savez(files['npz'], **state_dict)
  torch_format.save_zip(prefixed, str(files['zip']))
  torch_format.save_legacy(state_dict, str(files['legacy']))
  if class_name in ('SiT', 'UNetModel'):
    del files['pickle']  # SiT and CM publish state dicts only.
  else:
    save_pickle(state_dict, str(files['pickle']), class_name, fields)
  for kind, path in files.items():
    if kind == 'pickle':
      imported = import_weights.read_nvlabs_pickle(str(path))
    else:
      imported = import_weights.read_state_dict_file(str(path), class_name, fields=fields)
    readout = import_weights.READOUT_OF[class_name]
    assert (imported.data_shape, imported.num_classes, imported.readout.name) == (SHAPE, CLASSES, readout), kind
    assert imported.network.to_dict() == network.to_dict(), kind
    for got, want in zip(jax.tree.leaves(imported.params), jax.tree.leaves(params)):
      np.testing.assert_array_equal(got, want, err_msg=kind)

  if arch == 'cm':
    # CTM's two-time variant starts from CM's teacher by name: its s layers are new, and without s it is the teacher.
    two_time = import_weights.network_config(class_name, {k: v for k, v in fields.items() if k != 'image_size'})
    two_time.two_times = True
    module = nn.build_network(two_time, num_classes=CLASSES)
    abstract = import_weights.abstract_params(two_time, SHAPE, CLASSES)
    flat_new = {path: leaf for path, leaf in traverse_util.flatten_dict(abstract).items()
                if path not in traverse_util.flatten_dict(params)}
    assert sorted({path[-2] for path in flat_new}) == ['emb_layers_s__1', 'time_embed_s__0', 'time_embed_s__2']
    zeros = {path: np.zeros(leaf.shape, leaf.dtype) for path, leaf in flat_new.items()}
    merged = traverse_util.unflatten_dict({**traverse_util.flatten_dict(params), **zeros})
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2,) + SHAPE), jnp.float32)
    one_time = nn.build_network(imported.network, num_classes=CLASSES)
    t, y = jnp.array([0.1, -0.3]), jnp.array([1, 4])
    np.testing.assert_allclose(nn.make_apply(module)(merged, x, t, None, y),
                               nn.make_apply(one_time)(params, x, t, None, y), rtol=1e-6, atol=1e-6)
    assert nn.make_apply(module)(merged, x, t, t, y).shape == x.shape
  if arch != 'edm2':
    return  # One architecture through Orbax here (the distillation test below imports DDPM++ by the command).
  out = str(tmp_path / 'teacher')
  import_weights.write_run(out, imported)
  teacher = runs.open_teacher(out)
  assert teacher.readout.name == 'edm' and teacher.network.name == network.name
  for got, want in zip(jax.tree.leaves(teacher.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(got), want)
  with pytest.raises(FileExistsError, match='already holds a run'):
    import_weights.write_run(out, imported)
  # EDM2's learned uncertainty is the network's log-variance head; the teacher's prediction leaves it out (traced
  # only: the ports' numbers are experiments/parity's).
  x = jax.ShapeDtypeStruct((2,) + SHAPE, jnp.float32)
  prediction = jax.eval_shape(lambda params, x: teacher.prediction(teacher.readout.path, 'x0')(
      params, x, jnp.float32(1.0), jnp.array([3, 10])), teacher.params, x)
  assert prediction.shape == x.shape

  # ECT's ImageNet-64 config starts from it (as its official run starts from EDM2's pickle) at this tiny size:
  # without the uncertainty head, with ECT's dropout_res, its weights projected by forced weight normalisation.
  from fewstep_jax.config_base import load_config
  from fewstep_jax.methods import build_method
  from fewstep_jax.nn import edm2_unet
  sizes = {f'network.{key}': tuple(value) if isinstance(value, list) else value
           for key, value in network.to_dict().items() if key in fields}
  config = load_config(os.path.join(REPO, 'configs/imagenet64/ect.py'),
                       dict(sizes, **{'method.init_from': out, 'network.channel_mult_noise': 0}))
  inputs = runs.resolve_inputs(config, SHAPE, CLASSES)
  method = build_method(config, data_shape=SHAPE, num_classes=CLASSES, inputs=inputs)
  student = jax.jit(method.init)(jax.random.PRNGKey(0), runs.frozen_values(inputs)).nets['student']
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(student.params), jax.tree.leaves(params)):
    if path[-1].key == 'weight':
      want = edm2_unet.normalize(want, range(1, want.ndim))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def test_wrong_missing_and_extra_weights_name_the_parameter(tmp_path):
  class_name, fields, network, params = tiny_params('ddpmpp')
  state_dict = import_weights.to_state_dict(class_name, params)
  read = lambda sd: import_weights.from_state_dict(class_name, sd, network, SHAPE, CLASSES, 'net.pt')
  wrong = dict(state_dict, **{'enc.8x8_block0.conv0.weight': np.zeros((8, 8, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r'enc\.8x8_block0\.conv0\.weight has shape \(8, 8, 1, 1\).*expects '
                                       r'\(8, 8, 3, 3\)'):
    read(wrong)
  missing = {key: value for key, value in state_dict.items() if key != 'map_layer1.bias'}
  with pytest.raises(ValueError, match=r"missing \['map_layer1.bias'\] \(1\), unexpected \[\] \(0\)"):
    read(missing)
  extra = dict(state_dict, **{'dec.8x8_extra.weight': np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"unexpected \['dec.8x8_extra.weight'\]"):
    read(extra)
  other_filter = dict(state_dict, **{'enc.4x4_down.conv0.resample_filter': np.full((1, 1, 4, 4), 1 / 16, np.float32)})
  with pytest.raises(ValueError, match=r'buffer enc\.4x4_down\.conv0\.resample_filter is'):
    read(other_filter)
  with pytest.raises(ValueError, match="argument 'widths' has no counterpart in network 'edm_songunet'"):
    import_weights.network_config('SongUNet', {'widths': 3})


def test_the_ports_parameter_counts_are_edms_at_the_published_sizes():
  # EDM's own counts (training/networks.py, printed by experiments/parity/edm.py); NCSN++'s 128 Fourier
  # frequencies are a buffer there and a (gradient-free) parameter here.
  expected = {'edm_cifar10_ddpmpp': ((32, 32, 3), 10, 9, 55_735_299),
              'edm_cifar10_ncsnpp': ((32, 32, 3), 10, 9, 56_400_643 + 128),
              'edm_imagenet64_adm': ((64, 64, 3), 1000, 0, 295_899_267),
              # EDM2-S: 280,209,381 parameters and 640 Fourier frequencies and phases (buffers there).
              'edm2_img64_s': ((64, 64, 3), 1000, None, 280_209_381 + 640),
              'sit_xl_2': ((32, 32, 4), 1000, None, 675_129_632),  # SiT's count, its fixed position table included.
              'cm_imagenet64': ((64, 64, 3), 1000, None, 295_899_267)}  # CM's UNetModel (experiments/parity).
  for preset, (shape, classes, augment_dim, count) in expected.items():
    class_name, fields = import_weights.PRESETS[preset]
    fields = {key: value for key, value in fields.items() if key != 'image_size'}  # Data, not network.
    augment = {} if augment_dim is None else {'augment_dim': augment_dim}
    network = import_weights.network_config(class_name, dict(fields, **augment))
    assert import_weights.parameter_count(network, shape, classes) == count, preset


def _import_by_command(tmp_path):
  """An EDM DDPM++ pickle imported by `python -m fewstep_jax.tools.import_checkpoint`; returns (teacher dir, its params)."""
  class_name, fields, network, params = tiny_params('ddpmpp', seed=1)
  params = jax.tree.map(lambda p: 0.1 * p, params)
  pickle_path = str(tmp_path / 'edm.pkl')
  save_pickle(import_weights.to_state_dict(class_name, params), pickle_path, class_name, fields)
  teacher = str(tmp_path / 'teacher')
  result = run_main([f'--src={pickle_path}', f'--out={teacher}'], module='fewstep_jax.tools.import_checkpoint')
  assert 'edm_songunet' in result.stdout and 'readout' in result.stdout
  return teacher, params


def test_the_import_command_writes_a_run_that_opens_as_the_teacher(tmp_path):
  teacher_dir, params = _import_by_command(tmp_path)
  teacher = runs.open_teacher(teacher_dir)
  assert teacher.readout.name == 'edm' and teacher.network.name == 'edm_songunet'
  for got, want in zip(jax.tree.leaves(teacher.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(got), want)


def test_the_import_command_sizes_a_bare_state_dict_with_network_fields(tmp_path):
  # DDPM++ at a size no preset has: the preset's fields, four of them overridden on the command line.
  class_name, fields, network, params = tiny_params('ddpmpp', seed=2)
  src, out = str(tmp_path / 'net.safetensors'), str(tmp_path / 'teacher')
  from safetensors.numpy import save_file
  save_file(import_weights.to_state_dict(class_name, params), src)
  result = run_main([f'--src={src}', f'--out={out}', '--arch=edm_cifar10_ddpmpp', '--network.model_channels=8',
                     '--network.channel_mult=(1, 2)', '--network.num_blocks=1', '--network.attn_resolutions=(4,)'],
                    module='fewstep_jax.tools.import_checkpoint')
  assert result.stdout.splitlines() == [
      f"{src}: network 'edm_songunet', {import_weights.parameter_count(network, SHAPE, CLASSES):,} parameters, data "
      f"shape {SHAPE}, {CLASSES} classes, readout 'edm' -> {out}",
      f'use it as --config.method.teacher={out} (or start a student from it: --config.method.init_from={out})']
  assert result.stderr == ''  # No Orbax or absl INFO lines.
  teacher = runs.open_teacher(out)
  assert teacher.network.to_dict() == json.loads(json.dumps(network.to_dict()))  # Tuples stored as JSON lists.
  for got, want in zip(jax.tree.leaves(teacher.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.slow  # About 70 s: the import command, then a CD run through the entry point.
def test_an_imported_edm_teacher_distils_a_student_through_the_entry_point(tmp_path):
  teacher, _ = _import_by_command(tmp_path)
  workdir = str(tmp_path / 'cd')
  run_main(['--config=configs/digits/cd.py', f'--workdir={workdir}', f'--config.method.teacher={teacher}',
            f'--config.data.dir={tmp_path / "data"}',
            '--config.method.init_from=', '--config.train.num_steps=2', '--config.train.batch_size=8',
            '--config.network.channels=8', '--config.network.channel_mult=(1,)', '--config.network.attn_resolutions=()',
            '--config.eval.at_end=False', '--config.eval.nfe=(1,)', '--config.eval.sample_grid=4',
            '--config.method.teacher_guidance=1.0'])  # One teacher call per evaluation; experiments/parity checks the null label.
  opened = runs.open_run(workdir)
  assert opened.step == 2 and opened.info['teachers']['teacher']['network']['name'] == 'edm_songunet'


def test_the_sd_vae_round_trips_with_either_attention_naming_and_encodes_and_decodes(tmp_path):
  from safetensors.numpy import save_file
  from fewstep_jax.nn import sd_vae
  vae = sd_vae.SDVAE(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
  abstract = sd_vae.abstract_params(vae, image_size=8)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda leaf: (0.3 * rng.standard_normal(leaf.shape)).astype(np.float32), abstract)
  state_dict = sd_vae.to_state_dict(params)
  assert state_dict['encoder.mid_block.attentions.0.to_out.0.weight'].shape == (16, 16)
  assert state_dict['decoder.up_blocks.0.upsamplers.0.conv.weight'].shape == (16, 16, 3, 3)
  deprecated = {key.replace('.to_out.0.', '.proj_attn.').replace('.to_q.', '.query.'): value
                for key, value in state_dict.items()}
  save_file(deprecated, str(tmp_path / 'vae.safetensors'))
  _, loaded = sd_vae.load(str(tmp_path / 'vae.safetensors'), vae)
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  # Shapes only (traced): the numbers are experiments/parity/sd_vae.py's, and test_encode_latents runs both halves.
  images = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  mean, std = jax.eval_shape(lambda p, x: vae.apply({'params': p}, x, method=vae.encode), loaded, images)
  assert mean.shape == std.shape == (2, 4, 4, 4)
  assert jax.eval_shape(lambda p, z: vae.apply({'params': p}, z, method=vae.decode), loaded, mean).shape == images.shape
  wrong = dict(state_dict, **{'quant_conv.weight': np.zeros((8, 8, 3, 3), np.float32)})
  with pytest.raises(ValueError, match=r'quant_conv\.weight has shape \(8, 8, 3, 3\), expected \(8, 8, 1, 1\)'):
    sd_vae.from_state_dict(wrong, vae)
