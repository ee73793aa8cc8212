"""PNG image grids and 2-D scatter plots of samples, the pictures every run writes to `samples/`.

Scatter plots draw on a bare Agg canvas (no pyplot), so importing this module changes no global matplotlib
state and works without a display.
"""
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def image_grid(images, ncol: int, scale: int = 4, padding: int = 1):
  """Tiles images: [N, H, W, C] floats in [-1, 1] (C = 1 or 3) into one uint8 picture.

  Returns [rows (H + padding) + padding, ncol (W + padding) + padding] (x scale, plus a trailing C = 3 axis for colour)
  with rows = ceil(N / ncol); tiles sit on a mid-grey background and each pixel becomes a scale x scale block
  (nearest neighbour, so that 8x8 digits stay sharp).
  """
  images = np.asarray(images, np.float32)
  n, height, width, channels = images.shape
  if channels not in (1, 3):
    raise ValueError(f'image_grid needs 1 or 3 channels, got images of shape {images.shape}')
  pixels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
  rows = math.ceil(n / ncol)
  grid = np.full((rows * (height + padding) + padding, ncol * (width + padding) + padding, channels), 128, np.uint8)
  for i, image in enumerate(pixels):
    top = padding + (i // ncol) * (height + padding)
    left = padding + (i % ncol) * (width + padding)
    grid[top:top + height, left:left + width] = image
  grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  return grid[..., 0] if channels == 1 else grid


def save_image_grid(path: str, images, ncol: int = 8, scale: int = 4, padding: int = 1):
  """Writes `image_grid(images, ncol, scale, padding)` as a PNG (greyscale for C = 1, RGB for C = 3)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(image_grid(images, ncol, scale, padding)).save(path)


def save_scatter(path: str, points, reference=None, title: str = '', size_inches: float = 4.0, dpi: int = 100):
  """Writes a PNG scatter plot of points: [N, 2], over optional reference points: [M, 2] drawn in grey.

  The picture is size_inches * dpi pixels square; both sets share equal axes so that shapes are not distorted.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure = Figure(figsize=(size_inches, size_inches), dpi=dpi)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  if reference is not None:
    reference = np.asarray(reference)
    axes.scatter(reference[:, 0], reference[:, 1], s=2, c='0.7', label='reference')
  points = np.asarray(points)
  axes.scatter(points[:, 0], points[:, 1], s=2, c='tab:blue', label='samples')
  axes.set_aspect('equal', adjustable='datalim')
  if reference is not None:
    axes.legend(loc='upper right', markerscale=4, fontsize='small')
  axes.set_title(title)
  figure.tight_layout()
  figure.savefig(path, dpi=dpi)


def save_metric_curves(path: str, rows: list, dpi: int = 100):
  """Writes a PNG of each metric of evaluation rows against the NFE (log-2 axis), a panel per metric and a line per
  (step, parameter copy, sampler); a metric's reference, where it has one, is a dashed grey line."""
  metrics = sorted({row['metric'] for row in rows})
  if not metrics:
    return
  columns = min(3, len(metrics))
  panel_rows = math.ceil(len(metrics) / columns)
  figure = Figure(figsize=(4.0 * columns, 3.0 * panel_rows), dpi=dpi)
  FigureCanvasAgg(figure)
  for index, metric in enumerate(metrics):
    axes = figure.add_subplot(panel_rows, columns, index + 1)
    lines = {}
    for row in rows:
      if row['metric'] == metric:
        label = f'step {row.get("step", 0)} {row.get("params", "")} {row.get("sampler", "")}'.strip()
        lines.setdefault(label, []).append((row['nfe'], row['value'], row.get('reference')))
    for label, points in sorted(lines.items()):
      points.sort()
      axes.plot([p[0] for p in points], [p[1] for p in points], marker='o', label=label)
      references = [p[2] for p in points if p[2] is not None]
      if references:
        axes.axhline(references[-1], color='0.6', linestyle='--', linewidth=1)
    axes.set_xscale('log', base=2)
    axes.set_xlabel('NFE')
    axes.set_title(metric)
    axes.legend(fontsize='x-small')
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=dpi)
