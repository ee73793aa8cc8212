"""The Frechet distance between two sets of images in one line, as `python -m pytorch_fid A B` gives it, with the
evaluator's networks and preprocessing, so that the same images give the number --mode=eval reports:

  python -m fewstep_jax.eval.fid A B --weights=pt_inception-2015-12-05-6726825d.pth
  FID:  12.345678

Each of A and B is a folder of image files, an .npz / .npy of samples (eval/sources.py says how both are read and
preprocessed) or an .npz of statistics (mu, sigma: EDM's and ADM's published reference files, or ones that the stats
command or --save_stats wrote); two statistics files need no weights. With --save_stats,

  python -m fewstep_jax.eval.fid --save_stats A OUT.npz --weights=...

writes A's statistics to OUT.npz instead, which must not exist yet (pytorch-fid's --save-stats). --features=dinov2
with the DINOv2 ViT-L/14 weights gives FD-DINOv2 (`FD_DINOv2:  ...`) as the evaluator's dinov2 metric computes it.
The distance is metrics.frechet_distance (float64, from symmetric eigendecompositions). --batch and --resolution are
the stats command's. The result is the only line on stdout (progress goes to stderr); a user error ends the command
with one line and exit status 1.
"""
import os
import sys

from fewstep_jax.eval import sources, stats

# What the printed line calls each network's distance.
DISTANCE_NAMES = {'inception': 'FID', 'dinov2': 'FD_DINOv2'}
PATHS_HELP = 'folders of images, .npz / .npy arrays of samples or .npz statistics (mu, sigma)'


def note(message: str):
  print(message, file=sys.stderr, flush=True)


def open_source(path: str):
  """(mu, sigma) of a statistics file, or the sources.Images of a folder or an array of samples (checked, not yet
  read)."""
  if sources.is_statistics(path):
    return stats.load_stats(path)
  return sources.open_images(path)


def statistics(source, network, batch_size: int):
  """(mu, sigma) of an opened source: stored, or computed by `network` (a stats.FeatureNetwork)."""
  if not isinstance(source, sources.Images):
    return source
  note(f'reading {source.description}')
  mu, sigma, _ = stats.feature_statistics(source.batches, network, batch_size, progress=note)
  return mu, sigma


def distance(path_a: str, path_b: str, features: str = 'inception', weights: str | None = None,
             batch_size: int = 250, resolution: int = 0) -> float:
  """The Frechet distance between the `features` statistics of two sources (see the module docstring). Both are
  checked, and the weights too when images must be read, before a network is loaded."""
  from fewstep_jax.eval import metrics
  opened = [open_source(path) for path in (path_a, path_b)]
  network = None
  if any(isinstance(source, sources.Images) for source in opened):
    network = stats.feature_network(features, weights, resolution)
  (mu_a, sigma_a), (mu_b, sigma_b) = [statistics(source, network, batch_size) for source in opened]
  if mu_a.shape != mu_b.shape:
    raise ValueError(f'{path_a} gives {mu_a.shape[0]}-dimensional features, {path_b} {mu_b.shape[0]}-dimensional '
                     'ones: compare statistics of the same network (--features)')
  return metrics.frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def save_statistics(path: str, out: str, features: str = 'inception', weights: str | None = None,
                    batch_size: int = 250, resolution: int = 0) -> str:
  """Writes the `features` statistics of the images at `path` to the new .npz `out`; returns what was read."""
  if not out.endswith('.npz'):
    raise ValueError(f'--save_stats writes the statistics to the second path: name it FILE.npz, not {out}')
  if os.path.exists(out):
    raise ValueError(f'{out} exists; --save_stats does not replace a file: remove it or name another')
  if sources.is_statistics(path):
    raise ValueError(f'{path} holds statistics already; --save_stats reads images')
  images = sources.open_images(path)
  mu, sigma = statistics(images, stats.feature_network(features, weights, resolution), batch_size)
  stats.save_stats(out, mu, sigma)
  return images.description


def main(argv):
  from absl import flags
  options = flags.FLAGS
  paths = argv[1:]
  if len(paths) != 2:
    raise ValueError(f'give two paths A B ({PATHS_HELP}), or --save_stats A OUT.npz; got {len(paths)}: {paths}')
  network = dict(features=options.features, weights=options.weights, batch_size=options.batch,
                 resolution=options.resolution)
  if options.save_stats:
    described = save_statistics(*paths, **network)
    print(f'{options.features} statistics of {described} written to {paths[1]}', flush=True)
  else:
    print(f'{DISTANCE_NAMES[options.features]}:  {distance(*paths, **network)}', flush=True)


def define_flags():
  from absl import flags
  stats.define_network_flags()
  flags.DEFINE_bool('save_stats', False, 'Write the statistics of the first path to the second (a new .npz) '
                    'instead of printing a distance')


if __name__ == '__main__':
  from fewstep_jax import cli
  define_flags()
  cli.run(main)
