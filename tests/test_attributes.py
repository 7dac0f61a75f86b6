"""Attributes: label set L, the user_role rule, log fields and variable keys.

Upstream's labels and log fields are in docs/protocol.md, "Its metrics" and "Its log line".
"""

from __future__ import annotations

import pytest

from otel_panel_receiver.attributes import (
    CUT_MARK,
    LOG_FIELDS,
    METRIC_LABELS,
    log_attributes,
    metric_attributes,
    variable_keys,
)
from otel_panel_receiver.model import Host, PanelEvent, Variable, Viewer
from otel_panel_receiver.payload import decode
from otel_panel_receiver.testing import sample_payload


def start_event() -> PanelEvent:
    """Return the decoded start sample."""
    return decode(sample_payload("v2-start.json"), now=0)


def test_metric_attributes_are_label_set_l_without_trailing_colon() -> None:
    assert metric_attributes(start_event()) == {
        "grafana_host": "grafana.example.com",
        "grafana_env": "production",
        "dashboard_name": "Service Overview",
        "dashboard_uid": "ZQZXRMXMk",
        "dashboard_timezone": "browser",
        "user_theme": "dark",
        "user_timezone": "browser",
        "user_locale": "en-US",
        "user_role": "editor",
        "user_login": "jdoe",
        "user_name": "Jane Doe",
    }
    assert tuple(metric_attributes(start_event())) == METRIC_LABELS


def test_user_labels_are_left_out_when_disabled() -> None:
    attrs = metric_attributes(start_event(), users=False)
    assert "user_login" not in attrs and "user_name" not in attrs and len(attrs) == 9


@pytest.mark.parametrize(("port", "address"), [("", "g.example"), ("3000", "g.example:3000")])
def test_grafana_host_has_a_port_only_when_not_default(port: str, address: str) -> None:
    assert Host(hostname="g.example", port=port).address == address


@pytest.mark.parametrize(
    ("admin", "edit", "org_role", "role"),
    [
        (True, False, "Viewer", "admin"),
        (False, True, "Viewer", "editor"),
        (False, False, "Admin", "user"),  # upstream ignores orgRole; kept for compatibility
        (True, True, "Admin", "admin"),
    ],
)
def test_user_role_is_admin_then_editor_then_user_ignoring_org_role(
    admin: bool, edit: bool, org_role: str, role: str
) -> None:
    viewer = Viewer(is_grafana_admin=admin, has_edit_permission_in_folders=edit, org_role=org_role)
    assert viewer.role == role


def test_log_attributes_have_upstream_fields_in_order_then_variables() -> None:
    attrs = log_attributes(start_event())
    assert tuple(attrs)[: len(LOG_FIELDS)] == LOG_FIELDS
    assert attrs["host"] == "https://grafana.example.com"
    assert (
        attrs["build"] == "(commit=fdcf0a2a11, edition=Open Source, env=production, version=8.1.5)"
    )
    assert attrs["license"] == "(state=, expiry=0, license=false)"
    assert attrs["instance"] == (
        "(label=Instance, type=query, multi=true, count=2, values=[web-1:9100,web-2:9100])"
    )


def test_variables_can_be_left_out_of_the_log() -> None:
    assert tuple(log_attributes(start_event(), variables=False)) == LOG_FIELDS


def test_variables_never_overwrite_fixed_fields_or_each_other() -> None:
    names = ["type", "uuid", "", "env", "env", "var_env", "msg"]
    keys = variable_keys(tuple(Variable(name=n) for n in names))
    assert keys == ["var_type", "var_uuid", "var_", "env", "var_env", "var_var_env", "var_msg"]
    assert len(set(keys)) == len(keys)


def test_a_label_value_past_the_limit_is_cut_and_marked() -> None:
    body = b'{"uuid":"u","type":"start","time":1,"dashboard":{"name":"' + b"x" * 10_000 + b'"}}'
    attrs = metric_attributes(decode(body, now=0), max_length=128)
    assert attrs["dashboard_name"] == "x" * 127 + CUT_MARK
    assert len(attrs["dashboard_name"]) == 128
    assert metric_attributes(decode(body, now=0))["dashboard_name"] == "x" * 10_000  # no limit
