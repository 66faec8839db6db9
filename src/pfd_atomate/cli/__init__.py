"""The ``pfd`` command line (:mod:`pfd_atomate.cli.main`) and the demo it runs."""
