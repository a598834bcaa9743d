"""Issue 23's safety list: no private, loopback, link-local or metadata address is reached, before or after a
redirect or a DNS change; limits on size, time, redirects and types; a gzip bomb refused. Each refusal is one
sentence and the session goes on. Only the fixture site on 127.0.0.1 is ever connected to (allowed through the
allow-list, in these tests only); every other address is refused before a connection is made."""

from __future__ import annotations

import ipaddress

import pytest
from web_helpers import web_cards, web_orchestrator
from web_site import WebSite

from foundation_models.webclient import WebError, policy
from foundation_models.webclient.policy import AddressPolicy, refusal


@pytest.fixture(scope="module")
def site():
    with WebSite() as site:
        yield site


@pytest.fixture(scope="module")
def session(site, tmp_path_factory):
    orch = web_orchestrator(site, tmp_path_factory.mktemp("web"), cards=web_cards(timeout_s=1.0))
    return orch.new_session()


def one_sentence(text: str | None) -> bool:
    return bool(text) and "\n" not in text and text.endswith(".") and "Traceback" not in text


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1", "169.254.169.254",
     "0.0.0.0", "100.64.0.1", "224.0.0.1", "::1", "fc00::1", "fd00:ec2::254", "fe80::1", "::", "::ffff:127.0.0.1",
     "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::1"],
)  # fmt: skip
def test_every_non_public_address_is_refused(address):
    assert refusal(ipaddress.ip_address(address)) is not None
    with pytest.raises(WebError, match="Refused to connect"):
        AddressPolicy().pin(address, 80)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_networks_and_names_and_nothing_else():
    allow = AddressPolicy.from_allow_list(["10.0.0.0/8", "wiki.corp.example", "*.lab.example"],
                                          resolve=lambda host, port: ["192.168.7.7"])  # fmt: skip
    assert allow.pin("10.2.3.4", 80) == "10.2.3.4"
    assert allow.pin("wiki.corp.example", 443) == "192.168.7.7"
    assert allow.pin("a.b.lab.example", 443) == allow.pin("lab.example", 443) == "192.168.7.7"
    for refused in ("192.168.7.7", "intranet.example", "notlab.example"):
        with pytest.raises(WebError, match="private"):
            allow.pin(refused, 80)


def test_the_fixture_site_itself_is_refused_without_the_allow_list(site, tmp_path):
    session = web_orchestrator(site, tmp_path, allow=()).new_session()
    before = len(site.requests)
    for url in (site.url("/article"), site.url("/article", "localhost"), f"http://[::1]:{site.port}/",
                f"http://0.0.0.0:{site.port}/", f"http://[::ffff:127.0.0.1]:{site.port}/"):  # fmt: skip
        call = session.call_tool("read_url", {"url": url})
        assert one_sentence(call.error) and "Refused to connect" in call.error, (url, call.error)
    assert len(site.requests) == before, "nothing was sent"


def test_a_redirect_to_the_metadata_address_is_refused(session, site):
    call = session.call_tool(
        "read_url", {"url": site.url("/to?url=http://169.254.169.254/latest/meta-data/")}
    )
    assert one_sentence(call.error), call.error
    assert "169.254.169.254" in call.error and "link-local (cloud metadata)" in call.error


def test_a_hostname_that_resolves_to_a_private_address_is_refused(session, site, monkeypatch):
    asked = []
    monkeypatch.setattr(policy, "system_resolve", lambda host, port: asked.append(host) or ["10.20.30.40"])
    call = session.call_tool("read_url", {"url": "http://intranet.example/wiki"})
    assert (
        one_sentence(call.error)
        and "intranet.example (10.20.30.40)" in call.error
        and "private" in call.error
    )
    # and after a redirect: the fixture site sends the reader to a name that resolves inside
    call = session.call_tool("read_url", {"url": site.url("/to?url=http://rebind.example/admin")})
    assert one_sentence(call.error) and "rebind.example (10.20.30.40)" in call.error
    assert asked == ["intranet.example", "rebind.example"]


def test_the_connection_goes_to_the_address_that_was_checked(session, site, monkeypatch):
    """DNS rebinding: the name resolves to the allowed address once, to a private one afterwards. The request is
    sent to the address checked (by IP, with the name in the Host header), and the name is resolved once."""
    answers = iter([["127.0.0.1"], ["10.0.0.9"], ["10.0.0.9"]])
    monkeypatch.setattr(policy, "system_resolve", lambda host, port: next(answers))
    call = session.call_tool("read_url", {"url": f"http://rebinding.example:{site.port}/host"})
    assert call.error is None, call.error
    assert f"Host was rebinding.example:{site.port}" in call.output
    assert site.requests[-1] == ("/host", f"rebinding.example:{site.port}")
    assert next(answers) == ["10.0.0.9"], "resolved exactly once"


@pytest.mark.parametrize(
    "path, words",
    [("/big", "50.0 MB; the limit is 5.0 MB"), ("/big-chunked", "larger than 5.0 MB"), ("/slow", "took longer than 1 s"),
     ("/bomb", "once decompressed"), ("/loop", "redirected more than 5 times"), ("/pdf", "application/pdf"),
     ("/missing", "HTTP 404")],
)  # fmt: skip
def test_limits_refuse_with_one_sentence_and_the_session_goes_on(session, site, path, words):
    call = session.call_tool("read_url", {"url": site.url(path)})
    assert one_sentence(call.error) and words in call.error, call.error
    assert call.seconds < 5
    again = session.call_tool("read_url", {"url": site.url("/article")})
    assert again.error is None and "Bell Rock Lighthouse" in again.output


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "javascript:alert(1)", "not a url",
                                 "http://user:secret@example.org/"])  # fmt: skip
def test_only_plain_web_addresses_are_read(session, url):
    call = session.call_tool("read_url", {"url": url})
    assert one_sentence(call.error), call.error
    assert "secret" not in call.error
