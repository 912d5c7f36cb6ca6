# Default attestation rules for AMD SEV-SNP evidence.
#
# Input:  {"tee": "snp", "claims": <SnpClaims>, "init_data": <object or null>}
# Result: data.policy.status; the engine's base file declares
#         `default status := "contraindicated"`, so anything not affirmed here
#         is contraindicated.
#
# Reference values (data.reference, name -> array of strings):
#   snp_launch_measurement   accepted launch measurements, lowercase hex (96 digits).
#                            Required: without it nothing is affirmed.
#   snp_min_bootloader       minimum reported TCB SVNs, decimal strings; each is
#   snp_min_tee              optional (absent = not checked). They are compared
#   snp_min_snp              with the reported TCB, the one the VCEK certifies.
#   snp_min_microcode
#   snp_min_fmc              (Turin only)
#   init_data_digest         accepted initdata digests (see default.rego). Required.
#
# Always required: guest policy forbids debugging and migration agents, the
# report comes from VMPL 0, and the client sent initdata whose digest is bound in
# HOST_DATA (the verifier refuses a mismatch; this states it positively) and is
# registered: HOST_DATA is chosen by the host, so binding alone does not stop a
# host that launches the guest with an initdata of its own.
package policy

snp_measurement_ok if {
	input.claims.measurement in data.reference.snp_launch_measurement
}

snp_min(field) := to_number(data.reference[concat("", ["snp_min_", field])][0])

snp_tcb_field_ok(field) if {
	not data.reference[concat("", ["snp_min_", field])]
}

snp_tcb_field_ok(field) if {
	object.get(input.claims.reported_tcb, field, -1) >= snp_min(field)
}

snp_tcb_ok if {
	every field in ["bootloader", "tee", "snp", "microcode"] {
		snp_tcb_field_ok(field)
	}
	snp_fmc_ok
}

snp_fmc_ok if input.claims.product != "turin"

snp_fmc_ok if {
	input.claims.product == "turin"
	snp_tcb_field_ok("fmc")
}

snp_guest_policy_ok if {
	input.claims.policy.debug_allowed == false
	input.claims.policy.migrate_ma_allowed == false
	input.claims.vmpl == 0
}

status := "affirming" if {
	input.tee == "snp"
	snp_measurement_ok
	snp_tcb_ok
	snp_guest_policy_ok
	init_data_pinned
}
