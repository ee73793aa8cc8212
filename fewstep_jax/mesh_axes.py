"""The names of the device mesh's axes, shared by the networks (which shard attention over the batch axes) and the
trainer (which builds the mesh): a module below both, so that networks do not depend on the training code."""

# The batch is split over both; parameters are sharded over 'fsdp' (train/sharding.py).
BATCH_AXES = ('data', 'fsdp')
