"""Tier 4: SMTP AUTH on the submission listener (Django backends, after TLS, throttled);
none on the MX listener."""

from __future__ import annotations

import smtplib
from base64 import b64encode

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from django_inbound_smtp.models import InboundMessage
from django_inbound_smtp.testing import running_server
from tests.helpers import Certs, GuardedSMTP

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
MESSAGE = b"Subject: submitted\r\n\r\nx\r\n"


def _plain(username: str, password: str) -> str:
    return "PLAIN " + b64encode(f"\0{username}\0{password}".encode()).decode()


@pytest.fixture
def submission(certs: Certs, make_mailbox):
    make_mailbox("user@our.test")
    User.objects.create_user("alice", password="right horse battery")
    User.objects.create_user("gone", password="pw", is_active=False)
    settings = {
        "HOSTNAME": "mx.test",
        "TLS_CERTFILE": str(certs.certfile),
        "TLS_KEYFILE": str(certs.keyfile),
        "SUBMISSION_BIND": "127.0.0.1:0",
        "AUTH_MAX_FAILURES": 3,
        "AUTH_FAILURES_PER_CLIENT": 4,
    }
    with override_settings(INBOUND_SMTP=settings), running_server() as server:
        yield server


def _client(server, certs: Certs, *, tls: bool = True) -> GuardedSMTP:
    client = GuardedSMTP(server.host, server.submission_port, timeout=10)
    client.ehlo("laptop.test")
    if tls:
        client.starttls(context=certs.client_context())
        client.ehlo("laptop.test")
    return client


def test_authenticated_submission_is_stored_with_the_user(submission, certs) -> None:
    client = _client(submission, certs)
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    client.login("alice", "right horse battery")
    assert client.sendmail("alice@our.test", ["user@our.test"], MESSAGE) == {}
    client.quit()
    message = InboundMessage.objects.get()
    assert message.auth_user == "alice"
    assert b"with ESMTPSA id" in message.raw_bytes.split(b"\r\n\r\n")[0]


def test_login_mechanism_works_too(submission, certs) -> None:
    client = _client(submission, certs)
    client.user, client.password = "alice", "right horse battery"
    code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
    assert code == 235
    client.quit()


def test_no_auth_before_tls_and_no_mail_before_auth(submission, certs) -> None:
    client = _client(submission, certs, tls=False)
    assert client.docmd("AUTH", _plain("alice", "right horse battery"))[0] == 530
    client.starttls(context=certs.client_context())
    client.ehlo("laptop.test")
    code, text = client.docmd("MAIL FROM:<alice@our.test>")
    assert (code, text.decode()) == (530, "5.7.0 Authentication required")
    client.quit()


def test_wrong_and_inactive_credentials_fail_then_the_session_is_closed(submission, certs) -> None:
    client = _client(submission, certs)
    try:
        for username, password in (("alice", "wrong"), ("gone", "pw"), ("nobody", "x")):
            code, text = client.docmd("AUTH", _plain(username, password))
            assert (code, text.decode()) == (535, "5.7.8 Error: authentication failed")
        # The third failure in one session also ends it: 421, then the close.
        code, text = client.getreply()
        assert (code, text.decode()) == (
            421,
            "4.7.0 mx.test Error: too many failed authentications",
        )
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    finally:
        client.close()


def test_failures_per_client_address_lock_out_even_right_passwords(submission, certs) -> None:
    for _ in range(2):
        client = _client(submission, certs)
        for _ in range(2):
            assert client.docmd("AUTH", _plain("alice", "wrong"))[0] == 535
        client.quit()
    client = _client(submission, certs)
    code, text = client.docmd("AUTH", _plain("alice", "right horse battery"))
    assert (code, text.decode()) == (454, "4.7.0 Too many failed authentications; try again later")
    client.quit()


def test_the_mx_listener_offers_no_auth(submission, certs) -> None:
    client = GuardedSMTP(submission.host, submission.port, timeout=10)
    client.ehlo("c")
    client.starttls(context=certs.client_context())
    client.ehlo("c")
    assert "auth" not in client.esmtp_features
    code, text = client.docmd("AUTH", _plain("alice", "right horse battery"))
    assert (code, text.decode()) == (502, "5.5.1 Error: authentication not offered")
    client.quit()
