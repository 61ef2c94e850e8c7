"""Check pod specs against the Kubernetes Pod Security Standards *restricted* profile.

The restricted profile includes everything in the baseline profile, so both are checked. The rules
follow the published standard and the PodSecurity admission controller that enforces it (Linux
pods; for pods with ``spec.os.name: windows`` the Linux-only restricted rules are skipped, as the
controller does). The optional "non-root groups" control is not checked.

Manifests are plain dicts in the Kubernetes camelCase form, as ``kubectl get -o yaml`` shows them,
so rendered objects can be checked without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["check_manifest", "check_restricted", "pod_spec_of"]

# Kinds whose pod template lives at spec.template.
_TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}
)

_BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})

# Namespaced sysctls isolated from other pods on the node. The list has grown across releases
# (keepalive/fin_timeout in 1.29, tcp_rmem/tcp_wmem in 1.32); admitting the newest set matches
# what a current cluster accepts.
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)

_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)

# Pre-1.30 clusters configure AppArmor through annotations; they are still honoured, so they are
# still checked.
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"

_CONTAINER_LISTS = (
    ("containers", "container"),
    ("initContainers", "initContainer"),
    ("ephemeralContainers", "ephemeralContainer"),
)


def pod_spec_of(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """Find the pod spec inside a Kubernetes object.

    Args:
        manifest: One Kubernetes object as a camelCase dict.

    Returns:
        The pod spec of a Pod, the pod template's spec of a Deployment, StatefulSet, DaemonSet,
        ReplicaSet, ReplicationController or Job, ``spec.jobTemplate.spec.template.spec`` of a
        CronJob, ``template.spec`` of a PodTemplate; ``None`` for kinds that hold no pod.

    Raises:
        ValueError: The kind holds pods but the manifest has no pod spec where it should be.
    """
    kind = manifest.get("kind")
    if kind == "Pod":
        path: tuple[str, ...] = ("spec",)
    elif kind in _TEMPLATE_KINDS:
        path = ("spec", "template", "spec")
    elif kind == "CronJob":
        path = ("spec", "jobTemplate", "spec", "template", "spec")
    elif kind == "PodTemplate":
        path = ("template", "spec")
    else:
        return None
    node: Any = manifest
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, dict):
        raise ValueError(f"{kind} `{_name_of(manifest)}` has no pod spec at `{'.'.join(path)}`")
    return node


def _pod_annotations_of(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = manifest.get("kind")
    if kind == "Pod":
        path: tuple[str, ...] = ("metadata",)
    elif kind in _TEMPLATE_KINDS:
        path = ("spec", "template", "metadata")
    elif kind == "CronJob":
        path = ("spec", "jobTemplate", "spec", "template", "metadata")
    else:
        path = ("template", "metadata")
    node: Any = manifest
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    annotations = node.get("annotations") if isinstance(node, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _name_of(manifest: Mapping[str, Any]) -> str:
    metadata = manifest.get("metadata") or {}
    return str(metadata.get("name") or metadata.get("generateName") or "<unnamed>")


def _mapping(value: Any) -> Mapping[str, Any]:
    # Absent and explicit-null fields both mean "unset" in the Kubernetes API.
    return value if isinstance(value, Mapping) else {}


def _containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field, label in _CONTAINER_LISTS:
        for container in pod_spec.get(field) or []:
            container = _mapping(container)
            yield f"{label} `{container.get('name', '<unnamed>')}`", container


def check_restricted(
    pod_spec: Mapping[str, Any], *, pod_annotations: Mapping[str, Any] | None = None
) -> list[str]:
    """List every way a pod spec breaks the restricted Pod Security Standard.

    Containers, initContainers and ephemeralContainers are all checked. Where a field exists at
    both levels, a container's own setting overrides the pod's; an explicit bad value at pod level
    is still reported, as the PodSecurity admission controller does.

    Args:
        pod_spec: The pod spec (``Pod.spec`` or a template's ``spec``) as a camelCase dict.
        pod_annotations: The pod's annotations, for the legacy AppArmor and seccomp annotations.
            Default: no annotations.

    Returns:
        Human-readable violations, each naming the pod, container or volume and the field path,
        e.g. ``container `mlflow`: securityContext.allowPrivilegeEscalation must be false``.
        Empty when the spec complies.
    """
    violations: list[str] = []
    violations += _check_host_namespaces(pod_spec)
    violations += _check_host_process(pod_spec)
    violations += _check_volumes(pod_spec)
    violations += _check_sysctls(pod_spec)
    violations += _check_selinux(pod_spec)
    violations += _check_apparmor(pod_spec, pod_annotations or {})
    violations += _check_legacy_seccomp_annotations(pod_annotations or {})
    violations += _check_run_as_non_root(pod_spec)
    violations += _check_run_as_user(pod_spec)
    for where, container in _containers(pod_spec):
        security = _mapping(container.get("securityContext"))
        if security.get("privileged") is True:
            violations.append(f"{where}: securityContext.privileged must be false or unset")
        proc_mount = security.get("procMount")
        if proc_mount not in (None, "Default"):
            violations.append(
                f"{where}: securityContext.procMount must be Default or unset, got {proc_mount!r}"
            )
        for i, port in enumerate(container.get("ports") or []):
            host_port = _mapping(port).get("hostPort")
            if host_port not in (None, 0):
                violations.append(
                    f"{where}: ports[{i}].hostPort must be 0 or unset, got {host_port!r}"
                )
    # The restricted profile's Linux-only rules do not apply to Windows pods.
    if _mapping(pod_spec.get("os")).get("name") != "windows":
        violations += _check_seccomp(pod_spec)
        for where, container in _containers(pod_spec):
            security = _mapping(container.get("securityContext"))
            if security.get("allowPrivilegeEscalation") is not False:
                violations.append(
                    f"{where}: securityContext.allowPrivilegeEscalation must be false"
                )
            violations += _check_capabilities(where, security)
    return violations


def check_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """List every way a Kubernetes object breaks the restricted Pod Security Standard.

    Args:
        manifest: One Kubernetes object as a camelCase dict.

    Returns:
        The violations of :func:`check_restricted` for the object's pod spec, each prefixed with
        ``Kind/name: ``; empty for kinds that hold no pod.

    Raises:
        ValueError: The kind holds pods but the manifest has no pod spec.
    """
    pod_spec = pod_spec_of(manifest)
    if pod_spec is None:
        return []
    prefix = f"{manifest.get('kind')}/{_name_of(manifest)}: "
    violations = check_restricted(pod_spec, pod_annotations=_pod_annotations_of(manifest))
    return [prefix + v for v in violations]


def _check_host_namespaces(pod_spec: Mapping[str, Any]) -> list[str]:
    return [
        f"pod: {field} must be false or unset"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if pod_spec.get(field) is True
    ]


def _check_host_process(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = []
    path = "securityContext.windowsOptions.hostProcess"
    pod_security = _mapping(pod_spec.get("securityContext"))
    if _mapping(pod_security.get("windowsOptions")).get("hostProcess") is True:
        violations.append(f"pod: {path} must be false or unset")
    for where, container in _containers(pod_spec):
        security = _mapping(container.get("securityContext"))
        if _mapping(security.get("windowsOptions")).get("hostProcess") is True:
            violations.append(f"{where}: {path} must be false or unset")
    return violations


def _check_volumes(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = []
    allowed = ", ".join(sorted(_RESTRICTED_VOLUME_TYPES))
    for i, volume in enumerate(pod_spec.get("volumes") or []):
        volume = _mapping(volume)
        where = f"volume `{volume.get('name', i)}`"
        types = sorted(key for key, value in volume.items() if key != "name" and value is not None)
        if "hostPath" in types:
            violations.append(f"{where}: volumes[{i}].hostPath is forbidden")
        for volume_type in types:
            if volume_type not in _RESTRICTED_VOLUME_TYPES and volume_type != "hostPath":
                violations.append(
                    f"{where}: volumes[{i}].{volume_type} is not an allowed volume type "
                    f"(allowed: {allowed})"
                )
    return violations


def _check_sysctls(pod_spec: Mapping[str, Any]) -> list[str]:
    pod_security = _mapping(pod_spec.get("securityContext"))
    return [
        f"pod: securityContext.sysctls[{i}].name {name!r} is not a safe sysctl"
        for i, sysctl in enumerate(pod_security.get("sysctls") or [])
        if (name := _mapping(sysctl).get("name")) not in _SAFE_SYSCTLS
    ]


def _selinux_violations(where: str, security: Mapping[str, Any]) -> list[str]:
    options = _mapping(security.get("seLinuxOptions"))
    violations = []
    selinux_type = options.get("type")
    if selinux_type is not None and selinux_type not in _SELINUX_TYPES:
        allowed = ", ".join(sorted(t for t in _SELINUX_TYPES if t))
        violations.append(
            f"{where}: securityContext.seLinuxOptions.type must be unset or one of {allowed}, "
            f"got {selinux_type!r}"
        )
    for field in ("user", "role"):
        if options.get(field):
            violations.append(f"{where}: securityContext.seLinuxOptions.{field} must be unset")
    return violations


def _check_selinux(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = _selinux_violations("pod", _mapping(pod_spec.get("securityContext")))
    for where, container in _containers(pod_spec):
        violations += _selinux_violations(where, _mapping(container.get("securityContext")))
    return violations


def _apparmor_violation(where: str, security: Mapping[str, Any]) -> list[str]:
    profile_type = _mapping(security.get("appArmorProfile")).get("type")
    if profile_type is None or profile_type in _PROFILE_TYPES:
        return []
    return [
        f"{where}: securityContext.appArmorProfile.type must be RuntimeDefault or Localhost, "
        f"got {profile_type!r}"
    ]


def _check_apparmor(pod_spec: Mapping[str, Any], annotations: Mapping[str, Any]) -> list[str]:
    violations = _apparmor_violation("pod", _mapping(pod_spec.get("securityContext")))
    for where, container in _containers(pod_spec):
        violations += _apparmor_violation(where, _mapping(container.get("securityContext")))
    for key, value in annotations.items():
        if not key.startswith(_APPARMOR_ANNOTATION):
            continue
        if value != "runtime/default" and not str(value).startswith("localhost/"):
            violations.append(
                f"pod: metadata.annotations[{key!r}] must be runtime/default or localhost/*, "
                f"got {value!r}"
            )
    return violations


def _check_legacy_seccomp_annotations(annotations: Mapping[str, Any]) -> list[str]:
    return [
        f"pod: metadata.annotations[{key!r}] must not be unconfined"
        for key, value in annotations.items()
        if (key == _SECCOMP_POD_ANNOTATION or key.startswith(_SECCOMP_CONTAINER_ANNOTATION))
        and value == "unconfined"
    ]


def _check_seccomp(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = []
    path = "securityContext.seccompProfile.type"
    pod_security = _mapping(pod_spec.get("securityContext"))
    pod_type = _mapping(pod_security.get("seccompProfile")).get("type")
    pod_ok = pod_type in _PROFILE_TYPES
    if pod_type is not None and not pod_ok:
        violations.append(f"pod: {path} must be RuntimeDefault or Localhost, got {pod_type!r}")
    for where, container in _containers(pod_spec):
        profile = _mapping(container.get("securityContext")).get("seccompProfile")
        if profile is None:
            if not pod_ok:
                violations.append(
                    f"{where}: {path} must be RuntimeDefault or Localhost "
                    "(here or at pod level), but neither sets it"
                )
            continue
        container_type = _mapping(profile).get("type")
        if container_type not in _PROFILE_TYPES:
            violations.append(
                f"{where}: {path} must be RuntimeDefault or Localhost, got {container_type!r}"
            )
    return violations


def _check_capabilities(where: str, security: Mapping[str, Any]) -> list[str]:
    capabilities = _mapping(security.get("capabilities"))
    violations = []
    if "ALL" not in (capabilities.get("drop") or []):
        violations.append(f"{where}: securityContext.capabilities.drop must contain ALL")
    added = [str(c) for c in capabilities.get("add") or []]
    # Restricted narrows baseline's add list to NET_BIND_SERVICE; say which tier each breaks so
    # the fix is obvious.
    beyond_baseline = [c for c in added if c not in _BASELINE_CAPABILITIES]
    beyond_restricted = [
        c for c in added if c not in _RESTRICTED_CAPABILITIES and c in _BASELINE_CAPABILITIES
    ]
    if beyond_baseline:
        violations.append(
            f"{where}: securityContext.capabilities.add has {', '.join(beyond_baseline)}, "
            "which even the baseline profile forbids"
        )
    if beyond_restricted:
        violations.append(
            f"{where}: securityContext.capabilities.add may only contain NET_BIND_SERVICE, "
            f"got {', '.join(beyond_restricted)}"
        )
    return violations


def _check_run_as_non_root(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = []
    path = "securityContext.runAsNonRoot"
    pod_value = _mapping(pod_spec.get("securityContext")).get("runAsNonRoot")
    if pod_value is False:
        violations.append(f"pod: {path} must be true, got false")
    for where, container in _containers(pod_spec):
        value = _mapping(container.get("securityContext")).get("runAsNonRoot")
        if value is None:
            if pod_value is not True:
                violations.append(
                    f"{where}: {path} must be true (here or at pod level), but neither sets it"
                )
        elif value is not True:
            violations.append(f"{where}: {path} must be true, got {value!r}")
    return violations


def _is_root(uid: Any) -> bool:
    # bool is an int subclass, and False == 0; only a real integer 0 is root.
    return isinstance(uid, int) and not isinstance(uid, bool) and uid == 0


def _check_run_as_user(pod_spec: Mapping[str, Any]) -> list[str]:
    violations = []
    path = "securityContext.runAsUser"
    if _is_root(_mapping(pod_spec.get("securityContext")).get("runAsUser")):
        violations.append(f"pod: {path} must not be 0 (root)")
    for where, container in _containers(pod_spec):
        if _is_root(_mapping(container.get("securityContext")).get("runAsUser")):
            violations.append(f"{where}: {path} must not be 0 (root)")
    return violations
