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
#
# With workload data (`policy_data`, appended to this file by the policy generator; the
# contract is docs/WORKLOAD-POLICY.md) an application container must moreover be one the pod
# owner pinned: its image by digest, its process as the agent will run it, its mounts; exec
# only of listed commands, and the containers' output only when the owner allows it. The
# generic rules above keep applying. The agent evaluates CreateContainerRequest twice: as
# received and with the spec it will give runc (`coco_final`).
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
		mount_ok(m)
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
	workload_ok
}

ns_ok(ns) if object.get(ns, "Path", "") == ""

ns_ok(ns) if ns.Type == "network"

# In the final spec the agent itself points IPC and UTS (and a shared PID) namespace at
# the pause container's.
ns_ok(ns) if {
	final
	ns.Type in {"ipc", "uts", "pid"}
	regex.match(sprintf(`^/proc/[0-9]+/ns/%s$`, [ns.Type]), ns.Path)
}

# Set by the agent for its second evaluation; no request message has such a field, so the
# host cannot send it.
final if input.coco_final == true

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

# ---------------------------------------------------------------------------------------
# Workload data (docs/WORKLOAD-POLICY.md). Without it every rule below is moot:
# `workload_ok` holds and exec, stdio reads and mounts keep their defaults.

# A lookup, not a rule of that name, so the generator's `policy_data := {...}` is the only
# definition (regorus leaves `object.get(data.agent_policy, ...)` undefined from inside
# the package).
default pd := null

pd := data.agent_policy.policy_data

# Only a version this file understands; any other makes every workload rule undefined.
workload := pd if {
	pd != null
	pd.version == 1
}

workload_ok if pd == null

workload_ok if is_sandbox

workload_ok if {
	not is_sandbox
	c := app_entry
	image_ok(c.image)
	process_ok(c.process)
	object.get(input, ["OCI", "Root", "Readonly"], false) == c.readonly_root
}

# The pause container comes from the guest image. Both what the agent reads (the pull
# metadata) and the CRI annotation must say so: a host that labels only one of them gets
# the application rules.
is_sandbox if {
	object.get(input, ["OCI", "Annotations", "io.kubernetes.cri.container-type"], "") == "sandbox"
	pulls := guest_pulls
	count(pulls) > 0
	every st in pulls {
		sandbox_pull(st)
	}
}

guest_pulls := [st | some st in object.get(input, "storages", []); st.driver == "image_guest_pull"]

sandbox_pull(st) if {
	metas := [object.get(json.unmarshal(trim_prefix(o, "image_guest_pull=")), "metadata", {}) |
		some o in st.driver_options
		startswith(o, "image_guest_pull=")
	]
	count(metas) > 0
	every m in metas {
		object.get(m, "io.kubernetes.cri.container-type", "") == "sandbox"
	}
}

# The pinned container this request creates: by its CRI name, exactly one entry.
app_entry := named_container(object.get(input, ["OCI", "Annotations", "io.kubernetes.cri.container-name"], ""))

named_container(name) := found[0] if {
	name != ""
	found := [c | some c in workload.containers; c.name == name]
	count(found) == 1
}

# Every guest-pull storage names the pinned image by digest. The agent pulls the storage's
# `source` (Kata's runtime always sets it for an application container); an empty one
# would make it fall back to the metadata, so it is refused.
image_ok(pin) if {
	want := digest_ref(pin)
	count(guest_pulls) > 0
	every st in guest_pulls {
		digest_ref(st.source) == want
	}
}

# `name[:tag]@sha256:<hex>` → `repository@digest`; a tag beside the digest does not choose
# what is pulled (the puller resolves by digest), a reference without one is refused.
digest_ref(ref) := concat("@", [repository(name), parts[1]]) if {
	parts := split(ref, "@")
	count(parts) == 2
	regex.match(`^sha256:[a-f0-9]{64}$`, parts[1])
	name := regex.replace(parts[0], `:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`, "")
	name != ""
}

# The guest's reference parser (oci-spec 0.10 src/distribution/reference.rs `split_domain`,
# under oci-client 0.18): a first segment with `.` or `:`, or `localhost`, is a registry,
# else the name is on docker.io; `index.docker.io` is docker.io; a one-segment docker.io
# name is under `library/`.
repository(name) := regex.replace(with_registry(name), `^docker\.io/([^/]+)$`, "docker.io/library/$1")

with_registry(name) := regex.replace(name, `^index\.docker\.io/`, "docker.io/") if {
	regex.match(`^(localhost|[^/]*[.:][^/]*)/`, name)
} else := concat("/", ["docker.io", name])

# The process as runc will run it. In the first evaluation the image is not pulled yet:
# empty args and env and an empty or `/` cwd will be filled from it and checked in the
# final one.
process_ok(pin) if {
	p := object.get(input, ["OCI", "Process"], {})
	args_ok(object.get(p, "Args", []), pin.args)
	env_ok(object.get(p, "Env", []), pin.env)
	cwd_ok(object.get(p, "Cwd", ""), pin.cwd)
	object.get(p, ["User", "UID"], 0) == pin.uid
	object.get(p, ["User", "GID"], 0) == pin.gid
	{g | some g in object.get(p, ["User", "AdditionalGids"], [])} == {g | some g in object.get(pin, "additional_gids", [])}
	object.get(p, "Terminal", false) == pin.terminal
	object.get(p, "NoNewPrivileges", false) == pin.no_new_privileges
	pinned_caps_ok(process_caps(p), {c | some c in object.get(pin, "capabilities", [])})
}

args_ok(args, pinned) if args == pinned

args_ok(args, _) if {
	not final
	count(args) == 0
}

cwd_ok(cwd, pinned) if cwd == pinned

cwd_ok(cwd, _) if {
	not final
	cwd in {"", "/"}
}

env_ok(env, _) if {
	not final
	count(env) == 0
}

# Every pinned entry, and nothing else but what the env rules allow (the service
# environment kubelet adds). An extra entry may not redefine a pinned variable: the
# first of two wins in the C library's getenv.
env_ok(env, pinned) if {
	every e in pinned {
		e in env
	}
	pinned_set := {e | some e in pinned}
	names := {env_name(e) | some e in pinned}
	every e in env {
		env_entry_ok(e, pinned_set, names)
	}
}

env_entry_ok(e, pinned_set, _) if pinned_set[e]

env_entry_ok(e, pinned_set, names) if {
	not pinned_set[e]
	not names[env_name(e)]
	some r in env_patterns
	regex.match(r, e)
}

env_patterns := [anchored(r) | some r in object.get(workload, "env_rules", [])]

env_name(e) := split(e, "=")[0]

# A pattern of the data matches the whole string, however it is written.
anchored(r) := sprintf("^(?:%s)$", [r])

process_caps(p) := object.get(p, "Capabilities", {}) if is_object(object.get(p, "Capabilities", {}))

# Bounding, effective and permitted are the pinned set; nothing is inherited or ambient.
pinned_caps_ok(caps, want) if {
	every kind in ["Bounding", "Effective", "Permitted"] {
		{c | some c in object.get(caps, kind, [])} == want
	}
	no_inherited_caps(caps)
}

no_inherited_caps(caps) if {
	every kind in ["Inheritable", "Ambient"] {
		count(object.get(caps, kind, [])) == 0
	}
}

# Besides the standard mounts, the binds the owner pinned: destination and type exact,
# source matching the pinned pattern and in no case a container's rootfs or the image store.
mount_ok(m) if allowed_mount(m)

mount_ok(m) if {
	is_bind(m)
	some e in object.get(app_entry, "mounts", [])
	m.destination == e.destination
	m.type == e.type
	regex.match(anchored(e.source), m.source)
	confined_bind_source(m.source)
}

# Bundles, rootfs and the image store live in the agent's state directory
# (/run/kata-containers/containers, /run/kata-containers/image-store); the shim's shared
# files and the sandbox's storages do not.
confined_bind_source(src) if {
	not dot_segment(src)
	some root in ["/run/kata-containers/shared/", "/run/kata-containers/sandbox/"]
	startswith(src, root)
}

dot_segment(path) if {
	some s in split(path, "/")
	s in {".", ".."}
}

# The agent adds the target container's CRI name (`coco_container_name`). An exec runs a
# listed command as the container's user, with no capability the container lacks.
ExecProcessRequest if {
	c := named_container(object.get(input, "coco_container_name", ""))
	p := object.get(input, "process", {})
	object.get(p, "Args", []) in object.get(c, "exec", [])
	object.get(p, ["User", "UID"], 0) == c.process.uid
	object.get(p, ["User", "GID"], 0) == c.process.gid
	caps := process_caps(p)
	allowed := {x | some x in object.get(c.process, "capabilities", [])}
	every kind in ["Bounding", "Effective", "Permitted"] {
		every x in object.get(caps, kind, []) {
			x in allowed
		}
	}
	no_inherited_caps(caps)
}

# A pinned container's stdout/stderr, if the owner allows logs.
ReadStreamRequest if {
	workload.read_logs == true
	is_object(named_container(object.get(input, "coco_container_name", "")))
}
