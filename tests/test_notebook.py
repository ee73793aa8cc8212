"""experiments/notebooks/quickstart.ipynb runs top to bottom in a Jupyter kernel (nbclient), with its parameters
cell set to 200 training steps instead of 3000 so that it fits the default run (about 30 s)."""
import nbclient
import nbformat

from conftest import REPO

NOTEBOOK = REPO / 'experiments/notebooks/quickstart.ipynb'


def test_the_quickstart_notebook_executes():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  parameters = [cell for cell in notebook.cells if 'parameters' in cell.metadata.get('tags', [])]
  assert len(parameters) == 1 and 'num_steps = 3000' in parameters[0].source
  parameters[0].source = 'num_steps = 200\nseed = 0'
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(REPO)}}).execute()

  def text_of(cell):
    return ''.join(output.get('text', '') for output in cell.get('outputs', []))

  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert any('trained to step 200' in text_of(cell) for cell in code)
  assert any('image/png' in output.get('data', {}) for cell in code for output in cell.get('outputs', []))
  table = next(text_of(cell) for cell in code if 'results_table' in cell.source)
  assert '| NFE 1 | NFE 2 |' in table and 'sliced_w2' in table and 'mmd_rbf' in table
