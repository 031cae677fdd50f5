"""The connector's settings as core/ sees them: the API URL follows R2's URL rules, and neither
the secret nor a token ever reaches the logs of a working session."""

from __future__ import annotations

import io

import pytest

from psabridge.core import logs
from psabridge.core.errors import SettingsError
from psabridge.core.plugins import Connector, configure_plugin, connection_for, enable_plugin
from psabridge.plugins.rmm_datto.client import client_for


@pytest.mark.parametrize("url, problem", [
    ("merlot-api.centrastage.net", "no protocol"),
    ("https://www.merlot-api.centrastage.net", "must not contain www"),
])
def test_the_api_url_is_validated_like_every_service_url(pm, store, url, problem):
    with pytest.raises(SettingsError, match=problem):
        configure_plugin(pm, store, "datto", {"api_url": url})


def test_enabling_needs_key_and_secret_and_tests_the_connection(pm, store, sim):
    configure_plugin(pm, store, "datto", {"api_url": "http://datto.sim/"})
    with pytest.raises(SettingsError, match="api_key"):
        enable_plugin(pm, store, "datto", transport=sim.transport())
    configure_plugin(pm, store, "datto", {"api_key": sim.api_key, "api_secret": sim.api_secret})
    report = enable_plugin(pm, store, "datto", transport=sim.transport())
    assert report.ok and store.plugin_state("datto").enabled
    assert store.plugin_state("datto").settings["api_url"] == "http://datto.sim"


def test_no_secret_or_token_reaches_the_logs(pm, store, sim, options):
    stream = io.StringIO()
    logs.configure_logging(verbosity=2, fmt="json", stream=stream)  # httpx's debug lines too
    configure_plugin(pm, store, "datto", {"api_url": "http://datto.sim", "api_key": sim.api_key,
                                          "api_secret": sim.api_secret})
    connection = connection_for(pm, store, "datto", transport=sim.transport())
    client_for(connection, options)
    connector = Connector(pm, connection)
    list(connector.call("rmm_list_devices", site_uid=None))
    sim.expire_tokens()  # a second token, granted on the 401
    list(connector.call("rmm_list_sites"))
    tokens = list(sim.tokens)
    assert len(tokens) == 2 and stream.getvalue()
    for secret in (sim.api_secret, *tokens):
        assert secret not in stream.getvalue()
