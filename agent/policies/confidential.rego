# Default policy of a confidential pod: the host may run the pod's lifecycle, but it may not
# look inside (exec, read or write the containers' stdio), may not drop files outside the
# few paths the shim needs, may not run OCI hooks, and may not replace this policy.
package agent_policy

default AddARPNeighborsRequest := true
default AddSwapRequest := false
default CloseStdinRequest := true
default CopyFileRequest := false
default CreateContainerRequest := false
default CreateSandboxRequest := true
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

# Hooks would run host-chosen programs inside the trusted guest.
CreateContainerRequest if {
	count(object.get(input, ["OCI", "Hooks", "Prestart"], [])) == 0
	count(object.get(input, ["OCI", "Hooks", "Poststart"], [])) == 0
	count(object.get(input, ["OCI", "Hooks", "Poststop"], [])) == 0
	count(object.get(input, ["OCI", "Hooks", "CreateRuntime"], [])) == 0
	count(object.get(input, ["OCI", "Hooks", "CreateContainer"], [])) == 0
	count(object.get(input, ["OCI", "Hooks", "StartContainer"], [])) == 0
}

# Only the per-container hostname, hosts and resolv.conf the shim copies in.
CopyFileRequest if {
	regex.match(`^/run/kata-containers/shared/containers/[A-Za-z0-9]+-[A-Za-z0-9]+-(hostname|hosts|resolv\.conf)$`, input.path)
}

# The shim creates the parent directory of those files with CopyFile too.
CopyFileRequest if {
	input.path == "/run/kata-containers/shared/containers"
}
