# Default policy of a confidential pod: the host may run the pod's lifecycle, but it may not
# look inside (exec, read or write the containers' stdio), may not drop files outside the
# few paths the shim needs, may not run OCI hooks, and may not replace this policy.
#
# Safe on its own, without a generated policy: a container gets only the standard kernel
# file systems, binds of the files the shim copied in (and the sandbox's /dev/shm), at most
# containerd's default capabilities and no namespace the host names by path; so the host
# cannot graft another container's decrypted rootfs or the image store (both under
# /run/kata-containers) into a container it controls, nor give it the power to reach them.
# Facts on what the Kata runtime sends: src/tools/genpolicy/genpolicy-settings.json
# @7c6ba40c (kata-containers).
package agent_policy

default AddARPNeighborsRequest := true
default AddSwapRequest := false
default CloseStdinRequest := true
default CopyFileRequest := false
default CreateContainerRequest := false
default CreateSandboxRequest := false
default DestroySandboxRequest := true
default ExecProcessRequest := false
default GetMetricsRequest := true
default GetOOMEventRequest := true
default GuestDetailsRequest := true
default ListInterfacesRequest := true
default ListRoutesRequest := true
default MemHotplugByProbeRequest := false
default OnlineCPUMemRequest := true
default PauseContainerRequest := false
default ReadStreamRequest := false
default RemoveContainerRequest := true
default RemoveStaleVirtiofsShareMountsRequest := true
default ReseedRandomDevRequest := false
default ResumeContainerRequest := false
default SetGuestDateTimeRequest := false
default SetIPTablesRequest := false
default SetPolicyRequest := false
default SignalProcessRequest := true
default StartContainerRequest := true
default StatsContainerRequest := true
default TtyWinResizeRequest := true
default UpdateContainerRequest := true
default UpdateEphemeralMountsRequest := false
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default WaitProcessRequest := true
default WriteStreamRequest := false

CreateContainerRequest if {
	no_hooks
	every m in object.get(input, ["OCI", "Mounts"], []) {
		allowed_mount(m)
	}
	caps_ok
	# The network namespace is the host's (the agent drops it: the VM is the pod's network).
	every ns in object.get(input, ["OCI", "Linux", "Namespaces"], []) {
		ns_ok(ns)
	}
	count(object.get(input, "devices", [])) == 0
	every st in object.get(input, "storages", []) {
		st.driver in {"image_guest_pull", "local", "ephemeral"}
	}
}

ns_ok(ns) if object.get(ns, "Path", "") == ""

ns_ok(ns) if ns.Type == "network"

# Hooks would run host-chosen programs inside the trusted guest.
no_hooks if {
	every kind in ["Prestart", "Poststart", "Poststop", "CreateRuntime", "CreateContainer", "StartContainer"] {
		count(object.get(input, ["OCI", "Hooks", kind], [])) == 0
	}
}

# Kernel file systems runc creates fresh for the container: nothing of the guest in them.
kernel_fs := {"proc", "tmpfs", "devpts", "mqueue", "sysfs", "cgroup", "cgroup2"}

# runc binds whenever the options say so, whatever the type.
is_bind(m) if m.type == "bind"

is_bind(m) if "bind" in object.get(m, "options", [])

is_bind(m) if "rbind" in object.get(m, "options", [])

allowed_mount(m) if {
	not is_bind(m)
	m.type in kernel_fs
}

allowed_mount(m) if {
	is_bind(m)
	shared_file(m.source)
}

# The sandbox's shared memory (an `ephemeral` storage of CreateSandbox).
allowed_mount(m) if {
	is_bind(m)
	m.source == "/run/kata-containers/sandbox/shm"
}

# A file the shim copied in with CopyFile: <cid>-<nonce>-<name>, one path segment.
shared_file(path) if {
	regex.match(`^/run/kata-containers/shared/containers/[A-Za-z0-9]+-[A-Za-z0-9]+-[A-Za-z0-9_.-]+$`, path)
	not contains(path, "..")
}

# containerd's default set (genpolicy-settings.json `default_caps`); more would let a
# container undo its isolation (CAP_SYS_ADMIN mounts, CAP_SYS_PTRACE reads others).
default_caps := {
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

caps_ok if not is_object(object.get(input, ["OCI", "Process", "Capabilities"], null))

caps_ok if {
	caps := input.OCI.Process.Capabilities
	is_object(caps)
	every kind in ["Bounding", "Effective", "Inheritable", "Permitted", "Ambient"] {
		every c in object.get(caps, kind, []) {
			c in default_caps
		}
	}
}

# Kernel modules with host-chosen parameters would change the trusted guest kernel, and a
# host-named guest hook directory would run programs: neither is part of a pod.
CreateSandboxRequest if {
	count(object.get(input, "kernel_modules", [])) == 0
	object.get(input, "guest_hook_path", "") == ""
}

# Only the per-container hostname, hosts and resolv.conf the shim copies in.
CopyFileRequest if {
	regex.match(`^/run/kata-containers/shared/containers/[A-Za-z0-9]+-[A-Za-z0-9]+-(hostname|hosts|resolv\.conf|termination-log)$`, input.path)
}

# The shim creates the parent directory of those files with CopyFile too.
CopyFileRequest if {
	input.path == "/run/kata-containers/shared/containers"
}
