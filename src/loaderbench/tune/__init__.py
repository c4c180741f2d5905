"""``loaderbench tune``: find the fastest DataLoader settings for the user's own dataset, adaptively.

- :mod:`loaderbench.tune.search`: what to tune (:class:`TuneSpec`) and the adaptive search over an
  injectable measure function and clock (:class:`~loaderbench.tune.search.Search`), pure logic;
- :mod:`loaderbench.tune.probe`: the in-process probe of the dataset and the bottleneck classifier;
- :mod:`loaderbench.tune.run`: :func:`tune`, the search wired to the harness, and :class:`TuneResult`;
- :mod:`loaderbench.tune.pipelines`: ``--pipelines``, the recommended setting tried on the other pipelines;
- :mod:`loaderbench.tune.render`: the result as terminal text, a Markdown section and a JSON context;
- :mod:`loaderbench.tune.progress`: the tqdm progress display.
"""

from loaderbench.tune.run import TuneResult, tune
from loaderbench.tune.search import TuneSpec

__all__ = ["TuneResult", "TuneSpec", "tune"]
