"""Running PFD flows on workflow managers (FireWorks, jobflow-remote) with a MongoDB JobStore.

See docs/workflows.md. ``pfd_atomate.workflows.mongo`` needs only pymongo and maggma;
``.fireworks`` and ``.jobflow_remote`` import their manager when used.

Job-name filters for routing (jobflow ``name_filter`` matches substrings of job names, and the
PFD jobs are named after their step, see docs/design.md):

- :data:`ML_JOBS`: model training, MD exploration and model evaluation: fine-tune iterations
  ("pfd train s0 i0", "pfd explore s1 i1 ...", "pfd test ..."), and every distillation job
  ("pfd distill ..."). These want a GPU / ML node.
- :data:`DFT_JOBS`: the labelling jobs ("pfd label ...": the fan-out, one static calculation
  per frame, the collector). These want the DFT nodes.

Everything else (perturb, select, the loop's decide step, report) is light and may run anywhere.
"""

ML_JOBS: tuple[str, ...] = ("pfd train", "pfd explore", "pfd test", "pfd distill")
DFT_JOBS: tuple[str, ...] = ("pfd label",)

__all__ = ["DFT_JOBS", "ML_JOBS", "MongoServer", "jobstore_spec", "mongo_jobstore", "start_server"]


def __getattr__(name: str):
    # lazy: ``python -m pfd_atomate.workflows.mongo`` must not import it twice; only mongo's names of __all__ get here
    if name in __all__:
        from pfd_atomate.workflows import mongo

        return getattr(mongo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
