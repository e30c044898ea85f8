"""The ``cordum`` command line: thin commands that parse, call the kernel, and print."""
