"""Tests for the Pod Security Standards (restricted) checker."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from pulumi_mlops.policy.pss import check_manifest, check_restricted, pod_spec_of

Manifest = dict[str, Any]


def _hardened_container(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "ghcr.io/example/mlflow@sha256:" + "0" * 64,
        "ports": [{"name": "http", "containerPort": 5000}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def compliant_deployment() -> Manifest:
    """A Deployment that meets the restricted profile, with an init container and volumes."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mlflow", "namespace": "mlops"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "mlflow"}},
            "template": {
                "metadata": {"labels": {"app": "mlflow"}},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                    },
                    "initContainers": [_hardened_container("migrate")],
                    "containers": [_hardened_container("mlflow")],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "config", "configMap": {"name": "mlflow"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "mlflow"}},
                    ],
                },
            },
        },
    }


def _pod(manifest: Manifest) -> dict[str, Any]:
    spec = pod_spec_of(manifest)
    assert spec is not None
    return spec


def _container(manifest: Manifest, index: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = _pod(manifest)["containers"][index]
    return container


def _violations_after(mutate: Callable[[Manifest], None]) -> list[str]:
    manifest = compliant_deployment()
    mutate(manifest)
    return check_manifest(manifest)


def _only(violations: list[str]) -> str:
    assert len(violations) == 1, violations
    return violations[0]


def test_compliant_deployment_has_no_violations() -> None:
    assert check_manifest(compliant_deployment()) == []


def test_violations_are_prefixed_with_kind_and_name() -> None:
    def privileged(m: Manifest) -> None:
        _container(m)["securityContext"]["privileged"] = True

    assert _only(_violations_after(privileged)).startswith("Deployment/mlflow: container `mlflow`")


@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_are_forbidden(field: str) -> None:
    violation = _only(_violations_after(lambda m: _pod(m).__setitem__(field, True)))
    assert f"pod: {field} must be false" in violation


def test_host_namespaces_set_false_are_allowed() -> None:
    def all_false(m: Manifest) -> None:
        _pod(m).update(hostNetwork=False, hostPID=False, hostIPC=False)

    assert _violations_after(all_false) == []


def test_privileged_container_is_forbidden() -> None:
    def privileged(m: Manifest) -> None:
        _container(m)["securityContext"]["privileged"] = True

    violation = _only(_violations_after(privileged))
    assert "container `mlflow`: securityContext.privileged must be false" in violation


def test_host_process_is_forbidden() -> None:
    def host_process(m: Manifest) -> None:
        _container(m)["securityContext"]["windowsOptions"] = {"hostProcess": True}

    violation = _only(_violations_after(host_process))
    assert "securityContext.windowsOptions.hostProcess" in violation


def test_capability_outside_baseline_is_forbidden() -> None:
    def add_sys_admin(m: Manifest) -> None:
        _container(m)["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]

    violation = _only(_violations_after(add_sys_admin))
    assert "securityContext.capabilities.add" in violation
    assert "SYS_ADMIN" in violation
    assert "baseline" in violation


def test_baseline_capability_other_than_net_bind_service_is_forbidden() -> None:
    def add_chown(m: Manifest) -> None:
        _container(m)["securityContext"]["capabilities"]["add"] = ["CHOWN"]

    violation = _only(_violations_after(add_chown))
    assert "capabilities.add may only contain NET_BIND_SERVICE, got CHOWN" in violation


def test_net_bind_service_may_be_added() -> None:
    def add_net_bind(m: Manifest) -> None:
        _container(m)["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]

    assert _violations_after(add_net_bind) == []


def test_capabilities_must_drop_all() -> None:
    def drop_some(m: Manifest) -> None:
        _container(m)["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]

    violation = _only(_violations_after(drop_some))
    assert "container `mlflow`: securityContext.capabilities.drop must contain ALL" in violation


def test_host_path_volume_is_forbidden() -> None:
    def host_path(m: Manifest) -> None:
        _pod(m)["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run"}})

    violation = _only(_violations_after(host_path))
    assert "volume `docker`: volumes[3].hostPath is forbidden" in violation


def test_volume_type_outside_restricted_allow_list_is_forbidden() -> None:
    def nfs(m: Manifest) -> None:
        _pod(m)["volumes"].append({"name": "share", "nfs": {"server": "nas", "path": "/"}})

    violation = _only(_violations_after(nfs))
    assert "volume `share`: volumes[3].nfs is not an allowed volume type" in violation


@pytest.mark.parametrize(
    "volume",
    [
        {"name": "v", "csi": {"driver": "x"}},
        {"name": "v", "downwardAPI": {"items": []}},
        {"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"name": "v", "projected": {"sources": []}},
        {"name": "v", "secret": {"secretName": "s"}},
    ],
)
def test_restricted_volume_types_are_allowed(volume: dict[str, Any]) -> None:
    assert _violations_after(lambda m: _pod(m)["volumes"].append(volume)) == []


def test_host_port_is_forbidden() -> None:
    def host_port(m: Manifest) -> None:
        _container(m)["ports"][0]["hostPort"] = 5000

    violation = _only(_violations_after(host_port))
    assert "container `mlflow`: ports[0].hostPort must be 0 or unset, got 5000" in violation


def test_unconfined_apparmor_profile_is_forbidden() -> None:
    def unconfined(m: Manifest) -> None:
        _container(m)["securityContext"]["appArmorProfile"] = {"type": "Unconfined"}

    violation = _only(_violations_after(unconfined))
    assert "container `mlflow`: securityContext.appArmorProfile.type" in violation


def test_unconfined_apparmor_annotation_is_forbidden() -> None:
    def annotate(m: Manifest) -> None:
        key = "container.apparmor.security.beta.kubernetes.io/mlflow"
        m["spec"]["template"]["metadata"]["annotations"] = {key: "unconfined"}

    violation = _only(_violations_after(annotate))
    assert "metadata.annotations['container.apparmor.security.beta.kubernetes.io/mlflow']" in (
        violation
    )


def test_custom_selinux_type_is_forbidden() -> None:
    def selinux(m: Manifest) -> None:
        _pod(m)["securityContext"]["seLinuxOptions"] = {"type": "spc_t"}

    violation = _only(_violations_after(selinux))
    assert "pod: securityContext.seLinuxOptions.type" in violation
    assert "'spc_t'" in violation


def test_selinux_user_is_forbidden_but_level_is_allowed() -> None:
    def selinux(m: Manifest) -> None:
        options = {"user": "system_u", "level": "s0:c123,c456"}
        _container(m)["securityContext"]["seLinuxOptions"] = options

    violation = _only(_violations_after(selinux))
    assert "container `mlflow`: securityContext.seLinuxOptions.user must be unset" in violation


def test_unmasked_proc_mount_is_forbidden() -> None:
    def unmasked(m: Manifest) -> None:
        _container(m)["securityContext"]["procMount"] = "Unmasked"

    violation = _only(_violations_after(unmasked))
    assert "container `mlflow`: securityContext.procMount" in violation


def test_seccomp_must_be_set_at_pod_or_every_container() -> None:
    def no_seccomp(m: Manifest) -> None:
        del _pod(m)["securityContext"]["seccompProfile"]

    violations = sorted(_violations_after(no_seccomp))
    assert len(violations) == 2, violations
    assert ": container `mlflow`: securityContext.seccompProfile.type" in violations[0]
    assert ": initContainer `migrate`: securityContext.seccompProfile.type" in violations[1]


def test_seccomp_on_every_container_satisfies_the_rule() -> None:
    def per_container(m: Manifest) -> None:
        del _pod(m)["securityContext"]["seccompProfile"]
        for container in [*_pod(m)["containers"], *_pod(m)["initContainers"]]:
            container["securityContext"]["seccompProfile"] = {
                "type": "Localhost",
                "localhostProfile": "profiles/mlflow.json",
            }

    assert _violations_after(per_container) == []


def test_unconfined_seccomp_on_a_container_overrides_the_pod() -> None:
    def unconfined(m: Manifest) -> None:
        _container(m)["securityContext"]["seccompProfile"] = {"type": "Unconfined"}

    violation = _only(_violations_after(unconfined))
    assert "container `mlflow`: securityContext.seccompProfile.type" in violation
    assert "'Unconfined'" in violation


def test_unconfined_legacy_seccomp_annotation_is_forbidden() -> None:
    def annotate(m: Manifest) -> None:
        key = "seccomp.security.alpha.kubernetes.io/pod"
        m["spec"]["template"]["metadata"]["annotations"] = {key: "unconfined"}

    violation = _only(_violations_after(annotate))
    assert "metadata.annotations['seccomp.security.alpha.kubernetes.io/pod']" in violation


def test_unsafe_sysctl_is_forbidden() -> None:
    def sysctl(m: Manifest) -> None:
        _pod(m)["securityContext"]["sysctls"].append({"name": "kernel.msgmax", "value": "65536"})

    violation = _only(_violations_after(sysctl))
    assert "pod: securityContext.sysctls[1].name 'kernel.msgmax' is not a safe sysctl" in violation


def test_allow_privilege_escalation_must_be_false() -> None:
    def unset(m: Manifest) -> None:
        del _container(m)["securityContext"]["allowPrivilegeEscalation"]

    violation = _only(_violations_after(unset))
    assert violation == (
        "Deployment/mlflow: container `mlflow`: securityContext.allowPrivilegeEscalation "
        "must be false"
    )


def test_run_as_non_root_must_be_set() -> None:
    def unset(m: Manifest) -> None:
        del _pod(m)["securityContext"]["runAsNonRoot"]

    violations = _violations_after(unset)
    assert len(violations) == 2, violations
    assert all("securityContext.runAsNonRoot must be true" in v for v in violations)


def test_container_run_as_non_root_false_overrides_pod_true() -> None:
    def override(m: Manifest) -> None:
        _container(m)["securityContext"]["runAsNonRoot"] = False

    violation = _only(_violations_after(override))
    assert "container `mlflow`: securityContext.runAsNonRoot must be true, got False" in violation


def test_container_run_as_non_root_true_stands_in_for_unset_pod_level() -> None:
    def per_container(m: Manifest) -> None:
        del _pod(m)["securityContext"]["runAsNonRoot"]
        for container in [*_pod(m)["containers"], *_pod(m)["initContainers"]]:
            container["securityContext"]["runAsNonRoot"] = True

    assert _violations_after(per_container) == []


def test_pod_run_as_non_root_false_is_reported_even_when_containers_override_it() -> None:
    # As the PodSecurity admission controller does: the explicit bad pod-level value is reported.
    def pod_false(m: Manifest) -> None:
        _pod(m)["securityContext"]["runAsNonRoot"] = False
        for container in [*_pod(m)["containers"], *_pod(m)["initContainers"]]:
            container["securityContext"]["runAsNonRoot"] = True

    violation = _only(_violations_after(pod_false))
    assert "pod: securityContext.runAsNonRoot must be true, got false" in violation


def test_root_user_is_forbidden() -> None:
    def root(m: Manifest) -> None:
        _container(m)["securityContext"]["runAsUser"] = 0

    violation = _only(_violations_after(root))
    assert "container `mlflow`: securityContext.runAsUser must not be 0" in violation


def test_pod_level_root_user_is_forbidden() -> None:
    violation = _only(_violations_after(lambda m: _pod(m)["securityContext"].update(runAsUser=0)))
    assert "pod: securityContext.runAsUser must not be 0" in violation


def test_init_and_ephemeral_containers_are_checked() -> None:
    def loosen(m: Manifest) -> None:
        _pod(m)["initContainers"][0]["securityContext"]["privileged"] = True
        debug = _hardened_container("debug")
        debug["securityContext"]["allowPrivilegeEscalation"] = True
        _pod(m)["ephemeralContainers"] = [debug]

    violations = sorted(_violations_after(loosen))
    assert len(violations) == 2, violations
    assert ": ephemeralContainer `debug`: securityContext.allowPrivilegeEscalation" in violations[0]
    assert ": initContainer `migrate`: securityContext.privileged" in violations[1]


def test_windows_pods_skip_linux_only_rules() -> None:
    def windows(m: Manifest) -> None:
        _pod(m)["os"] = {"name": "windows"}
        del _pod(m)["securityContext"]["seccompProfile"]
        del _container(m)["securityContext"]["capabilities"]
        del _container(m)["securityContext"]["allowPrivilegeEscalation"]

    assert _violations_after(windows) == []


def test_cron_job_pod_spec_is_found_and_checked() -> None:
    template = compliant_deployment()["spec"]["template"]
    cron_job: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "retrain"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": copy.deepcopy(template)}},
        },
    }
    assert pod_spec_of(cron_job) is cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert check_manifest(cron_job) == []

    cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["hostPID"] = True
    assert check_manifest(cron_job) == ["CronJob/retrain: pod: hostPID must be false or unset"]


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
def test_pod_spec_of_template_kinds(kind: str) -> None:
    manifest = compliant_deployment()
    manifest["kind"] = kind
    assert pod_spec_of(manifest) is manifest["spec"]["template"]["spec"]


def test_pod_spec_of_pod() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
    assert pod_spec_of(pod) is pod["spec"]


@pytest.mark.parametrize("kind", ["Service", "ConfigMap", "Namespace", "NetworkPolicy"])
def test_kinds_without_pods_have_no_pod_spec_and_no_violations(kind: str) -> None:
    manifest = {"kind": kind, "metadata": {"name": "x"}, "spec": {"hostNetwork": True}}
    assert pod_spec_of(manifest) is None
    assert check_manifest(manifest) == []


def test_pod_kind_without_pod_spec_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Deployment `broken` has no pod spec at `spec.template"):
        pod_spec_of({"kind": "Deployment", "metadata": {"name": "broken"}, "spec": {}})


def test_check_restricted_flags_an_empty_security_context() -> None:
    violations = check_restricted({"containers": [{"name": "app", "image": "app"}]})
    assert sorted(violations) == [
        "container `app`: securityContext.allowPrivilegeEscalation must be false",
        "container `app`: securityContext.capabilities.drop must contain ALL",
        "container `app`: securityContext.runAsNonRoot must be true (here or at pod level), "
        "but neither sets it",
        "container `app`: securityContext.seccompProfile.type must be RuntimeDefault or "
        "Localhost (here or at pod level), but neither sets it",
    ]
