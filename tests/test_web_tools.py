"""The web cards as a user meets them: each search backend by configuration (off unless configured), pages read
and trimmed, pictures imported through the upload checks, the settings, the models panel, plan/weights/tools and
warm-up, none of which sends a request."""

from __future__ import annotations

import json

import pytest
from web_helpers import WEB, web_cards, web_orchestrator
from web_site import WebSite

from orchestrator import Orchestrator, cli
from orchestrator.settings import Settings
from orchestrator.ui.i18n import Strings
from orchestrator.ui.panel import models_html
from orchestrator.warmup import warm_up


@pytest.fixture(scope="module")
def site():
    with WebSite() as site:
        yield site


@pytest.mark.parametrize("backend, path, key, title", [("brave", "/brave", "brave-key", "Brave bell rock"),
                                                       ("tavily", "/tavily", "tavily-key", "Tavily bell rock")])  # fmt: skip
def test_api_key_backends_send_their_key_and_give_title_url_snippet(
    site, tmp_path, backend, path, key, title
):
    session = web_orchestrator(
        site, tmp_path, search=backend, search_url=site.url(path), key=key
    ).new_session()
    call = session.call_tool("web_search", {"query": "bell rock"})
    assert call.error is None and f"[1] {title}\nURL: {site.url('/article')}" in call.output
    wrong = web_orchestrator(
        site, tmp_path, search=backend, search_url=site.url(path), key="wrong"
    ).new_session()
    assert "HTTP 401" in wrong.call_tool("web_search", {"query": "x"}).error


def test_duckduckgo_goes_through_ddgs(site, tmp_path, monkeypatch):
    import ddgs

    class FakeDDGS:
        def __init__(self, timeout: int):
            self.timeout = timeout

        def text(self, query: str, max_results: int) -> list[dict]:
            return [
                {"title": f"Duck {query}", "href": "https://duck.example/a", "body": "quack"}
            ] * max_results

    monkeypatch.setattr(ddgs, "DDGS", FakeDDGS)
    session = web_orchestrator(site, tmp_path, search="duckduckgo", search_url=None).new_session()
    call = session.call_tool("web_search", {"query": "ponds", "max_results": 2})
    assert call.error is None and "DuckDuckGo (ddgs)" in call.output and "[2] Duck ponds" in call.output


@pytest.mark.parametrize("backend, words", [(None, "Web search is off: set VISUAL_ORCHESTRATOR_WEB_SEARCH"),
                                            ("brave", "needs an API key in BRAVE_API_KEY"),
                                            ("searxng", "address in VISUAL_ORCHESTRATOR_WEB_SEARCH_URL"),
                                            ("bing9000", "Unknown web search backend 'bing9000'")])  # fmt: skip
def test_search_is_off_unless_configured_and_a_bad_configuration_is_one_sentence(tmp_path, backend, words):
    orch = Orchestrator(WEB, weights="tiny", brain="rules", session_root=tmp_path,
                        settings=Settings.from_env(web_search=backend))  # fmt: skip
    call = orch.new_session().call_tool("web_search", {"query": "x"})
    assert call.error and words in call.error and "\n" not in call.error, call.error


def test_a_long_page_is_trimmed_to_the_budget_with_its_title_and_url(site, tmp_path):
    session = web_orchestrator(site, tmp_path, cards=web_cards(max_chars=500)).new_session()
    call = session.call_tool("read_url", {"url": site.url("/long")})
    assert call.error is None and call.output.startswith("Page: Long\nURL: " + site.url("/long"))
    assert "(Trimmed to the first 500 of" in call.output
    body = call.output.split("<untrusted_web_content>")[1].split("</untrusted_web_content>")[0]
    assert len(body) < 520


def test_page_pictures_are_imported_through_the_upload_checks(site, tmp_path):
    session = web_orchestrator(site, tmp_path).new_session()
    call = session.call_tool("read_url", {"url": site.url("/article"), "images": True})
    assert call.error is None and len(call.images) == 1
    [name] = call.images
    assert session.images.lineage(name).source == site.url("/pic.png")
    assert session.images.open(name).size[0] % 64 == 0
    assert "broken.png' is not an image this app can read" in call.output  # the upload validation's sentence
    assert "Refused to connect to 169.254.169.254" in call.output
    plain = session.call_tool("read_url", {"url": site.url("/article")})
    assert plain.images == [] and session.images.names() == [name]


def test_the_settings_read_the_web_variables_and_hide_the_key():
    settings = Settings.from_env({"VISUAL_ORCHESTRATOR_WEB_SEARCH": "tavily", "TAVILY_API_KEY": "tvly-secret",
                                  "VISUAL_ORCHESTRATOR_WEB_ALLOW": "10.0.0.0/8, wiki.corp.example,"})  # fmt: skip
    assert (settings.web_search, settings.web_search_key) == ("tavily", "tvly-secret")
    assert settings.web_allow == ("10.0.0.0/8", "wiki.corp.example")
    assert "tvly-secret" not in repr(settings)
    assert Settings.from_env({}).web_search is None, "off unless configured"


def test_the_models_panel_says_which_backend_is_active(site, tmp_path):
    html = models_html(web_orchestrator(site, tmp_path), Strings("en"))
    assert f"Web search: SearxNG at {site.url('')}" in html and 'data-card="WebReader"' in html
    assert "Web search is off" in models_html(web_orchestrator(site, tmp_path, search=None), Strings("en"))
    assert "网络搜索未开启" in models_html(web_orchestrator(site, tmp_path, search=None), Strings("zh"))


def test_plan_weights_and_tools_handle_cards_without_weights(capsys):
    assert cli.main(["plan", WEB, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["devices"]["cpu"]["total_mb"] == 0 and set(plan["placements"]) == {"WebSearch", "WebReader"}
    assert cli.main(["weights", "--load", WEB]) == 0
    assert "(needs no weights)" in capsys.readouterr().out
    assert cli.main(["tools", "--load", WEB, "--json"]) == 0
    assert {t["name"] for t in json.loads(capsys.readouterr().out)} == {"web_search", "read_url"}


def test_warm_up_loads_the_web_cards_and_sends_nothing(site, tmp_path):
    orch = web_orchestrator(site, tmp_path)
    before = len(site.requests)
    report = warm_up(orch)
    assert report.exit_code == 0 and [r.tool for r in report.rows] == ["web_search", "read_url"]
    assert all(r.first_seconds is not None and r.ready_seconds is None for r in report.rows)
    assert len(site.requests) == before
    assert {s.card: s.state for s in orch.manager.status()} == {
        "WebSearch": "resident",
        "WebReader": "resident",
    }
    broken = warm_up(web_orchestrator(site, tmp_path, search="brave", key=None))
    assert broken.exit_code == 1 and "BRAVE_API_KEY" in broken.rows[0].error
