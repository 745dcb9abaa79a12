"""The demo model's control endpoints are off unless started with --control.

Anyone who reaches its port could otherwise steer every reply (``/_control``)
and read what people said to it (``/_emissions``); docker-compose.yml starts it
without the flag, only the tests and the benchmark pass it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests import live


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.ModelServer]:
    server = live.ModelServer(tmp_path_factory.mktemp("plain-model"), control=False).start()
    with live.running(server.process):
        yield server


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_control"),
        ("POST", "/_control"),
        ("GET", "/_emissions"),
        ("GET", "/_emissions?clear=1"),
    ],
)
def test_demo_model_without_control_refuses_the_control_endpoints(
    plain_model: live.ModelServer, method: str, path: str
) -> None:
    response = httpx.request(
        method, f"{plain_model.url}{path}", json={"text": "steered"}, timeout=10
    )
    assert response.status_code == 404
    assert "--control" in response.json()["error"]["message"]


def test_demo_model_without_control_still_answers_and_is_not_steered(
    plain_model: live.ModelServer,
) -> None:
    httpx.post(f"{plain_model.url}/_control", json={"text": "steered"}, timeout=10)
    body = {"model": "demo", "messages": [{"role": "user", "content": "ann: hello"}]}
    response = httpx.post(f"{plain_model.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    text = response.json()["choices"][0]["message"]["content"]
    assert "demo model" in text and "steered" not in text


def test_demo_model_with_control_serves_it(model_server: live.ModelServer) -> None:
    assert "behaviour" in model_server.control()
    assert httpx.get(f"{model_server.url}/_emissions", timeout=10).status_code == 200
