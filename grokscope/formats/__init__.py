"""Every on-disk format grokscope reads or writes (schema 1 of ../shared/DESIGN.md), one module
per kind of file; the only package that knows file names and layouts.

* :mod:`~grokscope.formats.run`: a run's run.json, history.parquet, resume.safetensors, checkpoints/
* :mod:`~grokscope.formats.features`: features/step-*.safetensors, samples.safetensors, probe.json
* :mod:`~grokscope.formats.tables`: Parquet tables and measures/<family>.parquet
* :mod:`~grokscope.formats.steps`: steps in file and folder names (step-00001200.safetensors, ...),
  steps.json step maps
* :mod:`~grokscope.formats.hub_cache`: the Hugging Face Hub cache (models--ORG--NAME/refs, snapshots)
* :mod:`~grokscope.formats.dcp`: torch.distributed.checkpoint folders (.metadata, *.distcp)
* :mod:`~grokscope.formats.tensors`: safetensors files in general
* :mod:`~grokscope.formats.atomic`: atomic writes, their temporaries, the update lock of a table
* :mod:`~grokscope.formats.inputs`: command-line paths, ``-`` for paths on standard input

Users write ``from grokscope import formats`` and then ``formats.run.read_run(run_dir)``. Heavy
libraries (torch, pandas, safetensors) are imported inside the functions that need them, so
importing the package stays cheap for the CLI.
"""

from grokscope.formats import atomic, dcp, features, hub_cache, inputs, run, steps, tables, tensors  # noqa: F401
