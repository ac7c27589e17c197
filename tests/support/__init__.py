"""Helpers the tests (and ``bench/``) share, one of each:

- :mod:`tests.support.ports`: ``free_port()`` for a server that must be told its port,
  ``closed_port()`` for one where connections are refused.
- :mod:`tests.support.processes`: ``ServerProcess`` (any server as a process of its own, started,
  waited for, stopped), ``SheepdogProcess`` (``sheepdog serve``), ``run_tool``, ``http_ok``,
  ``tcp_open``.
- :mod:`tests.support.polling`: ``wait_until`` and ``wait_until_async``, the one way to wait for
  something that gives no signal.
- :mod:`tests.support.loop`: ``LoopThread``, an event loop on a thread for peers that synchronous
  code drives.
- :mod:`tests.support.strategies`: Hypothesis strategies for JSON and YAML documents.
- :mod:`tests.support.fuzzing`: the Hypothesis profiles and ``examples(n)``.
"""
