# Default attestation policy: the base every TEE's rules build on.
#
# Input:  {"tee": "<tee>", "claims": {...verified claims...}, "init_data": {...} | null}
# Data:   data.reference["<name>"] = ["value", ...]   (reference values)
# Result: data.policy.status = "affirming" | "warning" | "contraindicated"
#
# Anything not explicitly appraised is contraindicated. TEE-specific rules live
# in their own files of the same package and only ever *raise* the status for
# their own TEE, with mutually exclusive conditions.
package policy

default status := "contraindicated"

# The sample TEE has no hardware root of trust: it can prove it answered this
# session's nonce, nothing more. A warning at best, so the default resource
# policy (which wants "affirming") never releases anything to it.
status := "warning" if {
	input.tee == "sample"
}
