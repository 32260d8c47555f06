"""Cluster profiles, one YAML form for every place Aquila runs; ``kind:`` picks the model.

* :mod:`.options`: :class:`ClusterOptions` and :class:`TLSFiles`, what the engine is given (no
  pydantic, no dask: the CLI parser imports it);
* :mod:`.model`: the strict base model, the checks the kinds share, the lazy library import;
* :mod:`.profile`: reads a profile file, picks the kind's model, turns pydantic's errors into
  one line naming the file, the field and the fix;
* one module per kind family, each its model and how it starts: :mod:`.local` (``local``,
  ``address``), :mod:`.ssh`, :mod:`.jobqueue` (``slurm``, ``pbs``), :mod:`.kubernetes`,
  :mod:`.gateway`.

Only these modules and :mod:`pipeline.engine.cluster` (``open_client``, the one entry point)
make clusters; ``tests/test_cluster_profiles.py`` checks that nothing else does.
"""
