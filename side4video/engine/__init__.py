"""Training and testing: the one training step, the optimizer backends, the trainer with its state and checkpoint
keeper, checkpoints, the distributed plumbing and logging. Import the modules themselves (this file imports none,
so that lower parts such as the tasks may use ``engine.distributed`` without loading the trainer)."""
