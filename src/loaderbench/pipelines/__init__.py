"""The input pipelines a case can run through (``LoaderConfig.pipeline``), each behind one small adapter.

``dataloader`` (torch's ``DataLoader``, as always), ``stateful`` (torchdata's
``StatefulDataLoader``), ``nodesthread`` / ``nodesprocess`` (``torchdata.nodes``
with a thread or process ``ParallelMapper``) and ``spdl`` (SPDL's thread-based
pipeline).  :mod:`~loaderbench.pipelines.registry` says which are installed and
builds the adapter the harness drives; the rival pipelines are the optional
``rivals`` extra (``pip install "loaderbench[rivals]"``).
"""
