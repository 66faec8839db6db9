from pfd_atomate._version import __version__
