"""The channels, one package each (``wechat``, ``dingtalk``, ``feishu``, ``slack``, ``email``,
``log``), behind :class:`~bridge.channels.base.Channel`; :mod:`bridge.channels.registry` lists
them."""
