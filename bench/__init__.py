"""The benchmark: sheepdog against a bare pass-through, nginx and the upstream itself.

Run it with ``bench/run`` (see ``bench/README.md``); ``python -m bench --help`` lists the options.
"""
