"""The CLI's webhook commands: list, create, delete, test (mabapi webhooks ...)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mabapi.cli_client import Key, Url, connect, err, failed, out

webhooks_app = typer.Typer(
    help="Webhooks: list, create, delete, and test (send a test delivery, show its fate).",
    no_args_is_help=True,
)


@webhooks_app.command("list")
def webhooks_list(url: Url = None, key: Key = None) -> None:
    """Webhooks of the key's project (secrets are never shown again)."""
    try:
        with connect(url, key) as client:
            hooks = client.webhooks().webhooks
    except Exception as error:
        raise failed(error) from error
    # One tab-separated line each (ids and URLs are long: a table would cut them).
    for hook in hooks:
        fields = (hook.id, hook.url, ",".join(hook.events), hook.project)
        out.print("\t".join(fields), soft_wrap=True, highlight=False)
    if not hooks:
        out.print("no webhooks")


@webhooks_app.command("create")
def webhooks_create(
    target: Annotated[str, typer.Argument(help="The receiver's http(s) URL.")],
    event: Annotated[
        list[str],
        typer.Option(
            "--event",
            help="guardrail.breached, recommendation.changed, experiment.concluded or "
            "sample_ratio.mismatch; repeat for several.",
        ),
    ],
    secret: Annotated[
        str | None,
        typer.Option(help="Signing secret: whsec_ + base64 of 24-64 bytes (default: generated)."),
    ] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Subscribe a URL; prints the signing secret once."""
    try:
        with connect(url, key) as client:
            created = client.create_webhook(target, event, secret)
    except Exception as error:
        raise failed(error) from error
    out.print(f"created {created.id} for {', '.join(created.events)}")
    out.print(f"signing secret (shown once): {created.secret}")


@webhooks_app.command("delete")
def webhooks_delete(
    webhook_id: Annotated[str, typer.Argument()], url: Url = None, key: Key = None
) -> None:
    """Unsubscribe a webhook."""
    try:
        with connect(url, key) as client:
            removed = client.delete_webhook(webhook_id)
    except Exception as error:
        raise failed(error) from error
    out.print(f"deleted {removed.id} ({removed.url})")


@webhooks_app.command("test")
def webhooks_test(
    webhook_id: Annotated[str, typer.Argument()],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the first attempt.")] = 15.0,
    url: Url = None,
    key: Key = None,
) -> None:
    """Queue a webhook.test delivery and report its first attempt (exit 1 if it failed)."""
    try:
        with connect(url, key) as client:
            delivery_id = client.test_webhook(webhook_id).delivery_id
            deadline = time.monotonic() + wait
            while True:
                found = next(
                    (d for d in client.webhook_deliveries(webhook_id).deliveries
                     if d.id == delivery_id),
                    None,
                )  # fmt: skip
                if (found is not None and found.attempts) or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
    except Exception as error:
        raise failed(error) from error
    if found is None or not found.attempts:
        err.print(
            f"delivery {delivery_id} queued; no attempt within {wait:g} s (is a server running?)"
        )
        raise typer.Exit(1)
    attempt = found.attempts[-1]
    if found.status == "delivered":
        out.print(
            f"delivered {delivery_id}: HTTP {attempt.status_code} in {attempt.duration_ms} ms"
        )
        return
    err.print(f"delivery {delivery_id} failed: {attempt.error or f'HTTP {attempt.status_code}'}")
    raise typer.Exit(1)
