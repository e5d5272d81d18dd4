"""An OpenFeature provider for mabapi: flags resolve through OFREP (a flag is an
experiment, the targeting key a unit), and OpenFeature tracking reports conversions.

    pip install 'mabapi[openfeature]'

    from openfeature import api
    from mabapi.openfeature import MabapiProvider

    api.set_provider(MabapiProvider("http://127.0.0.1:8000", api_key="mab_..."))
    client = api.get_client()
    context = EvaluationContext(targeting_key="user-1")
    headline = client.get_string_value("headline", "Welcome", context)
    client.track("headline", context)                                   # a conversion
    client.track("checkout", context, TrackingEventDetails(value=42.5))  # a value

A tracking event named `experiment` is a conversion on the experiment's primary metric;
`experiment:metric_id` one on its guardrail `metric_id`. `details.value` is the value
(value metrics) and `details.attributes["event_id"]`, if given, counts a value event
once however often it is retried (POST /experiments/{id}/conversions)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

try:
    import requests
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import GeneralError, TargetingKeyMissingError
    from openfeature.provider import Metadata
    from openfeature.track import TrackingEventDetails
except ImportError as error:  # pragma: no cover - the plain install
    raise ImportError(
        "mabapi.openfeature needs the OpenFeature SDK: pip install 'mabapi[openfeature]'"
    ) from error


class MabapiProvider(OFREPProvider):
    """The community OFREP provider, with mabapi's key and OpenFeature tracking."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 5.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(base_url, headers_factory=lambda: dict(headers), timeout=timeout)
        self._headers = headers

    def get_metadata(self) -> Metadata:
        return Metadata(name="mabapi")

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Report a conversion of the context's unit (see the module docstring). Raises
        GeneralError when mabapi refuses it (an unknown unit, experiment or metric)."""
        unit = evaluation_context.targeting_key if evaluation_context else None
        if not unit:
            raise TargetingKeyMissingError("tracking needs the unit: a targeting key")
        experiment, _, metric = tracking_event_name.partition(":")
        body: dict[str, Any] = {"unit_id": unit}
        if metric:
            body["metric_id"] = metric
        details = tracking_event_details
        if details is not None and details.value is not None:
            body["value"] = details.value
        if details is not None and details.attributes.get("event_id") is not None:
            body["event_id"] = str(details.attributes["event_id"])
        url = f"{self.base_url.rstrip('/')}/experiments/{quote(experiment, safe='')}/conversions"
        try:
            response = self.session.post(
                url, json=body, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as error:
            raise GeneralError(f"mabapi is unreachable: {error}") from error
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise GeneralError(f"mabapi refused the conversion ({response.status_code}): {message}")
