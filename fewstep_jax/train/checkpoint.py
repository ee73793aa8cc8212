"""Orbax checkpoints of the TrainState plus the data iterator state, the metrics of the steps since the last
logged row, and the config.

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
        item_names=('state', 'data', 'log_interval', 'config'))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, log_interval: list, config_json: dict,
           force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        log_interval=ocp.args.JsonSave(log_interval),
        config=ocp.args.JsonSave(config_json)), force=force)

  def restore(self, step: int, abstract_state, shardings):
    """Restores (state, data_state, log_interval) at `step`, placing every array with its sharding."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
        log_interval=ocp.args.JsonRestore()))
    return restored.state, restored.data, restored.log_interval

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
