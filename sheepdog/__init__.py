"""sheepdog: a metering LLM relay proxy, and an Alertmanager bridge to WeChat Work, DingTalk,
Feishu/Lark, Slack and email."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sheepdog")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
