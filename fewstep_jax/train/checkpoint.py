"""Orbax checkpoints of the TrainState plus the data iterator state and the config.

Saves are asynchronous: `save` returns once the arrays are copied off the device, and the files are written
in the background, so training continues while they are written.
"""
import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str, max_to_keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=True,
                                             create=True),
        item_names=('state', 'data', 'config'))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, config_json: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config_json)), force=force)

  def restore(self, step: int, abstract_state, shardings):
    """Restores (state, data_state) at `step`, placing every array with its sharding."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
