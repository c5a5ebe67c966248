"""gpu-host-bootstrap inputs (allow-listed extra vars, tags, limits) and per-host results from runner events."""

from __future__ import annotations

import pytest

from flows.common.errors import BadInput
from flows.host_bootstrap.models import (
    TAGS,
    BootstrapReport,
    ExtraVars,
    host_results,
    parse_extra_vars,
    parse_tags,
    validate_limit,
)


def test_extra_vars_pass_only_what_was_set_and_reveal_the_token_only_to_ansible():
    ev = parse_extra_vars({"nvidia_driver_branch": "550", "mps_enabled": True,
                           "k8s_node_join_token": "abcdef.0123456789abcdef"})
    assert ev.to_ansible() == {"nvidia_driver_branch": "550", "mps_enabled": True,
                               "k8s_node_join_token": "abcdef.0123456789abcdef"}
    assert "0123456789abcdef" not in repr(ev) and "0123456789abcdef" not in ev.model_dump_json()
    assert ExtraVars().to_ansible() == {}


@pytest.mark.parametrize("data, needle", [
    ({"ansible_ssh_common_args": "-o ProxyCommand=sh"}, "ansible_ssh_common_args: not allowed"),
    ({"nvidia_driver_branch": "550; reboot"}, "nvidia_driver_branch"),
    ({"k8s_node_join_token": "abc"}, "not a kubeadm token"),
    ({"k8s_node_join_endpoint": "api:6443 --x"}, "k8s_node_join_endpoint"),
    ({"mps_enabled": "maybe"}, "mps_enabled"),
    (["nvidia_driver_branch"], "expected a mapping"),
])
def test_extra_vars_outside_the_allow_list_or_badly_typed_are_refused(data, needle):
    with pytest.raises(BadInput, match=needle):
        parse_extra_vars(data, source="vars.yml")


def test_tags_and_limits():
    assert parse_tags("common, drbd") == ["common", "drbd"]
    assert parse_tags(None) == [] and parse_tags(list(TAGS)) == list(TAGS)
    with pytest.raises(BadInput, match="unknown tag"):
        parse_tags("common,nvidia")
    assert validate_limit("gpu_hosts:&k8s_nodes:!gpu-a100-0[1:2]") == "gpu_hosts:&k8s_nodes:!gpu-a100-0[1:2]"
    assert validate_limit("") is None
    for bad in ("a b", "@hosts.txt", "h1;reboot", "$(id)"):
        with pytest.raises(BadInput, match="host pattern"):
            validate_limit(bad)


def _stats(**per_key):
    return {"event": "playbook_on_stats", "event_data": {"processed": {"h1": 1, "h2": 1, "dead": 1}, **per_key}}


def test_host_results_name_the_first_failed_task_and_unreachable_hosts():
    events = [
        {"event": "runner_on_unreachable", "event_data": {"host": "dead", "task": "Gathering Facts",
                                                          "res": {"msg": "ssh: connect to host 10.213.0.9\n port 22: No route"}}},
        {"event": "runner_on_failed", "event_data": {"host": "h2", "task": "Ignored", "ignore_errors": True,
                                                     "res": {"msg": "ignored"}}},
        {"event": "runner_on_failed", "event_data": {"host": "h2", "task": "Install drbd-utils",
                                                     "res": {"msg": "No package matching 'drbd-utils'"}}},
        {"event": "runner_on_failed", "event_data": {"host": "h2", "task": "Later", "res": {"msg": "x"}}},
        _stats(ok={"h1": 30, "h2": 5}, changed={"h1": 2}, failures={"h2": 1}, dark={"dead": 1},
               skipped={"h1": 40}, ignored={"h2": 1}),
    ]
    rows = {r.host: r for r in host_results(events)}
    assert (rows["h1"].status, rows["h1"].changed, rows["h1"].skipped, rows["h1"].task) == ("changed", 2, 40, None)
    assert (rows["h2"].status, rows["h2"].task, rows["h2"].message) == (
        "failed", "Install drbd-utils", "No package matching 'drbd-utils'")
    assert (rows["dead"].status, rows["dead"].task) == ("unreachable", "Gathering Facts")
    assert rows["dead"].message == "ssh: connect to host 10.213.0.9 port 22: No route"
    report = BootstrapReport(playbook="site.yml", inventory="i", check_mode=False, rc=4, hosts=list(rows.values()))
    assert not report.ok
    line = report.failure_line()
    assert "2 of 3 host(s) failed" in line
    assert "h2 failed at task 'Install drbd-utils'" in line and "dead unreachable at task 'Gathering Facts'" in line


def test_censored_failures_stay_censored():
    events = [{"event": "runner_on_failed", "event_data": {"host": "h1", "task": "Write the kubeadm join configuration",
                                                           "res": {"censored": "the output has been hidden due to the fact that 'no_log: true' was specified for this result"}}},
              _stats(failures={"h1": 1})]
    rows = {r.host: r for r in host_results(events)}
    assert rows["h1"].status == "failed" and "hidden" in rows["h1"].message
