"""The pieces of ``benchmarks/train_memory_speed.py`` (the entry point, with ``main(argv)``):

* ``methods`` — the measured methods (``METHODS``) and :class:`~memory_speed.methods.Method`, whose training step
  is the engine's ``train_step`` on a timing ``TorchBackend``; the full fine-tuning and adapter baselines;
* ``meters`` — the exact saved-for-backward meter with its breakdown, and the host's peak resident set;
* ``workers`` — what one worker process measures (a method, the scaling rows, the multi-view path) and how a
  worker is forked or spawned;
* ``report`` — derived ratios, the goals, the environment and the Markdown.
"""
