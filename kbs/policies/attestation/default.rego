# Default attestation policy: the base every TEE's rules build on.
#
# Input:  {"tee": "<tee>", "claims": {...verified claims...},
#          "init_data": {"digest": "<hex>", "algorithm": "<alg>", "data": {...}} | null}
#         init_data.digest is the lowercase hex of the whole digest of the initdata
#         TOML the client sent, with the algorithm the TOML names.
# Data:   data.reference["<name>"] = ["value", ...]   (reference values)
# Result: data.policy.status = "affirming" | "warning" | "contraindicated"
#
# Reference values every TEE's rules use:
#   init_data_digest   accepted initdata digests, hex (`kbs-client config
#                      register-initdata` appends one). Required: the initdata
#                      carries the pod's agent policy and KBS address, so evidence
#                      is only trusted with an initdata its owner registered. No
#                      initdata sent, or an unregistered one: never more than
#                      contraindicated.
#
# Anything not explicitly appraised is contraindicated. TEE-specific rules live
# in their own files of the same package and only ever *raise* the status for
# their own TEE, with mutually exclusive conditions.
package policy

default status := "contraindicated"

# The client sent initdata and its digest is registered. Binding (the digest
# is the one the hardware carries) is each TEE's verifier's and rules' part.
init_data_registered if {
	some registered in data.reference.init_data_digest
	lower(registered) == input.init_data.digest
}

# Sent, bound into the evidence, and registered: what SNP, TDX and TPM require.
init_data_pinned if {
	input.claims.init_data_bound == true
	init_data_registered
}

# The sample TEE has no hardware root of trust: it can prove it answered this
# session's nonce, nothing more. A warning at best, so the default resource
# policy (which wants "affirming") never releases anything to it; and only with
# a registered initdata, so a test policy that accepts warnings still pins it.
status := "warning" if {
	input.tee == "sample"
	init_data_registered
}
