"""The ``sheepdog`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from sheepdog import __version__
from sheepdog.config import Config, discover_config_path, load_config
from sheepdog.core.errors import ConfigError

EXIT_CONFIG_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except ConfigError as exc:
        print(f"sheepdog: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def load_from_args(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` / ``$SHEEPDOG_CONFIG`` / ``./sheepdog.yaml`` / defaults."""
    return load_config(discover_config_path(args.config, os.environ), os.environ)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sheepdog",
        description="LLM relay proxy with metering, and an Alertmanager bridge.",
    )
    parser.add_argument("--version", action="version", version=f"sheepdog {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service")
    serve.set_defaults(command=_serve)

    check = commands.add_parser("check-config", help="validate the config and print a summary")
    check.set_defaults(command=_check_config)

    render = commands.add_parser(
        "render", help="print exactly what a bridge target would be sent for an alert payload"
    )
    render.add_argument("target", metavar="TARGET", help="a target of bridge.targets")
    render.add_argument(
        "--payload", metavar="FILE|-", help="Alertmanager webhook JSON (default: a sample)"
    )
    render.set_defaults(command=_render)

    outbox = commands.add_parser(
        "outbox", help="inspect pending and dead-lettered notifications, send dead letters again"
    )
    outbox.add_argument("action", nargs="?", default="list", choices=("list", "dead", "retry"))
    outbox.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead letters to retry")
    outbox.add_argument("--all-dead", action="store_true", help="retry every dead letter")
    outbox.set_defaults(command=_outbox)

    report = commands.add_parser(
        "report",
        help="the month's usage from the spend ledger: per model and per client, tokens, USD, "
        "billed currency, savings",
    )
    report.add_argument(
        "--month",
        metavar="YYYY-MM",
        type=_month_argument,
        help="calendar month (UTC) to report (default: the current one)",
    )
    report.add_argument(
        "--format",
        dest="output_format",
        choices=("table", "csv", "json"),
        default="table",
        help="table for people (default), csv or json for spreadsheets and scripts",
    )
    report.set_defaults(command=_report)

    for sub in (serve, check, render, outbox, report):
        _add_config_option(sub)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $SHEEPDOG_CONFIG, else ./sheepdog.yaml, else the defaults)",
    )


def _serve(args: argparse.Namespace) -> int:
    from sheepdog.serve import serve  # imports aiohttp and the whole app: only when serving

    config = load_from_args(args)
    return serve(config)


def _check_config(args: argparse.Namespace) -> int:
    from bridge.service import build_renderer

    config = load_from_args(args)
    build_renderer(config.bridge)  # the templates too
    print(describe(config))
    return 0


def _render(args: argparse.Namespace) -> int:
    from bridge.cli import render_command

    return render_command(load_from_args(args).bridge, args.target, args.payload)


def _outbox(args: argparse.Namespace) -> int:
    from bridge.cli import outbox_command
    from sheepdog.core.backends import database_for

    config = load_from_args(args)
    return outbox_command(database_for(config), args.action, args.ids, all_dead=args.all_dead)


def _month_argument(text: str) -> str:
    from proxy.report import parse_month

    try:
        return parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _report(args: argparse.Namespace) -> int:
    from proxy.report import report_command
    from sheepdog.core.backends import database_for

    config = load_from_args(args)
    return report_command(config.proxy, database_for(config), args.month, args.output_format)


def _describe_database(config: Config) -> str:
    url = config.database.url
    if url is None:
        return "SQLite in state_dir"
    from sheepdog.core.postgres import describe_url

    return f"{describe_url(url.reveal())} (lease {config.database.lease_seconds:g}s)"


def describe(config: Config) -> str:
    """A summary for people; it names every part but prints no secret."""
    from bridge.service import describe_target, describe_watchdog

    auth = config.auth
    auth_parts = []
    if auth.bearer_tokens:
        auth_parts.append(f"{len(auth.bearer_tokens)} bearer token(s)")
    if auth.basic is not None:
        auth_parts.append(f"basic ({auth.basic.username})")
    lines = [
        f"config: {config.source or 'built-in defaults'} (valid)",
        f"listen: {config.listen}",
        f"state_dir: {config.state_dir}",
        f"database: {_describe_database(config)}",
        f"workers: {config.workers}",
        f"auth: {', '.join(auth_parts) or 'none (loopback only)'}",
    ]
    upstreams = config.proxy.upstream_list
    if config.proxy.upstreams:
        lines.append(f"proxy.upstreams: {len(upstreams)}, tried in this order")
    for upstream in upstreams:
        models = ", ".join(upstream.models) if upstream.models is not None else "every model"
        lines.append(
            ("  " if config.proxy.upstreams else "proxy.upstream: ")
            + f"{upstream.name}: {upstream.base_url} (api key "
            f"{'set' if upstream.api_key else 'not set'}, timeout {upstream.timeout_seconds:g}s, "
            f"{models})"
        )
    lines.append(
        f"proxy.clients: {len(config.proxy.clients) or 'none (open proxy, loopback only)'}"
    )
    for client in config.proxy.clients:
        budget = client.monthly_budget_usd
        parts = [f"monthly budget ${budget:,.2f}" if budget is not None else "no budget"]
        if client.requests_per_minute is not None:
            parts.append(f"{client.requests_per_minute:,} requests/min")
        if client.tokens_per_minute is not None:
            parts.append(f"{client.tokens_per_minute:,} tokens/min")
        lines.append(f"  {client.name}: {', '.join(parts)}")
    billing = config.proxy.billing
    lines.append(
        f"proxy.billing: {billing.currency} {billing.usd_rate:g} per USD "
        f"(market {billing.market_usd_rate:g})"
    )
    proxy = config.proxy
    source = f", {proxy.file_models} from {proxy.pricing_file}" if proxy.pricing_file else ""
    lines.append(
        f"proxy prices: {len(proxy.prices.models)} models ({len(proxy.pricing)} in proxy.pricing"
        f"{source}), {len(proxy.model_aliases)} aliases"
    )
    lines.append(f"bridge.timezone: {config.bridge.timezone}")
    lines.append(f"bridge.language: {config.bridge.language}")
    if config.bridge.templates_dir is not None:
        lines.append(f"bridge.templates_dir: {config.bridge.templates_dir}")
    lines.append(f"bridge.targets: {len(config.bridge.targets)}")
    for target in config.bridge.targets.values():
        lines.append(f"  {target.name}: {target.type} {describe_target(target)}")
    lines.append(f"bridge.watchdog: {describe_watchdog(config.bridge.watchdog)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
