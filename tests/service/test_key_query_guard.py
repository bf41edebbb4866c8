"""An ``api_key`` query parameter no key could be is refused (401), not crashed on (500).

Tiled copies the parameter into a cookie; a value latin-1 cannot encode made every route
answer 500 under ``make fuzz``. The served app (in process, with access control) is asked
over HTTP with such values, with a real key, and with Unicode in other parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from opmap.service import API_KEY_QUERY_REFUSAL, build_in_process_app
from opmap.settings import OpmapSettings

#: Percent-encoded values of ``api_key`` that no key could be (schemathesis sent such ones).
NOT_KEYS = ("%F3%A0%80%80", "%C3%9CE", "abc%00def", "abc%20def", "0123-4567", "%E2%82%AC" * 20)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[TestClient, str]]:
    settings = OpmapSettings(data_dir=Path(tmp_path_factory.mktemp("keyquery")) / "data")
    app = build_in_process_app(settings, access_control=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, settings.api_key_file.read_text().strip()


@pytest.mark.parametrize("value", NOT_KEYS)
@pytest.mark.parametrize("route", ["/api/v1/", "/api/v1/metadata/raw", "/api/v1/validate/x"])
def test_a_value_no_key_could_be_is_refused_naming_the_parameter(served, route, value):
    client, _ = served
    response = client.get(f"{route}?api_key={value}")
    assert response.status_code == 401
    assert response.json() == {"detail": API_KEY_QUERY_REFUSAL}
    assert "set-cookie" not in response.headers


def test_the_writer_key_in_the_query_still_works(served):
    client, key = served
    response = client.get(f"/api/v1/metadata/?api_key={key}")
    assert response.status_code == 200, response.text
    assert "data" in response.json()


def test_unicode_in_other_parameters_reaches_tiled(served):
    client, key = served
    response = client.get(
        "/api/v1/search/?filter%5Bfulltext%5D%5Bcondition%5D%5Btext%5D=%F3%A0%80%80",
        headers={"Authorization": f"Apikey {key}"},
    )
    assert response.status_code == 200, response.text
