# Default resource policy: release a resource only to a hardware TEE whose evidence
# matched the reference values (EAR status "affirming"). The sample TEE never passes.
package policy

default allow := false

allow if {
	input.tee != "sample"
	input.submods.cpu0["ear.status"] == "affirming"
}
