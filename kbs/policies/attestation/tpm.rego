# Default attestation rules for TPM 2.0 evidence.
#
# Input: {"tee": "tpm", "claims": <TpmClaims>, "init_data": <object or null>}.
# The verifier has already checked the quote signature, the session binding
# (report_data), the PCR values against the signed PCR digest and, when initdata
# was sent, that PCR 8 holds exactly its digest. What it cannot know is whether
# this AK and these PCR values are trustworthy: that is decided here.
#
# Reference values (data.reference, name -> array of accepted strings):
#   tpm_ak      lowercase hex SHA-256 of the AK's DER SubjectPublicKeyInfo
#               (claims.ak_public). Required: an unknown AK is never trusted.
#   tpm_pcrNN   NN = 00..23, lowercase hex of an accepted SHA-256 PCR NN value
#               (claims.pcrs["NN"]). Optional per PCR; every PCR that has a
#               reference must be covered by the quote and match one of them.
#   init_data_digest
#               accepted initdata digests (see default.rego). Required: the
#               client sent initdata, PCR 8 holds it (claims.init_data_bound) and
#               its digest is registered. A tpm_pcr08 reference pins it too, but
#               is optional and covers only the digest's first 32 bytes.
#
# Result: "affirming" when all hold. Otherwise the engine's default status
# ("contraindicated") applies; this file declares no default of its own.
package policy

status := "affirming" if {
	input.tee == "tpm"
	tpm_ak_trusted
	count(tpm_pcr_mismatches) == 0
	init_data_pinned
}

tpm_ak_trusted if {
	some ak in data.reference.tpm_ak
	lower(ak) == input.claims.ak_public
}

# Names of PCR reference values the quote does not satisfy.
tpm_pcr_mismatches contains name if {
	input.tee == "tpm"
	some name, accepted in data.reference
	startswith(name, "tpm_pcr")
	not tpm_pcr_accepted(trim_prefix(name, "tpm_pcr"), accepted)
}

tpm_pcr_accepted(index, accepted) if {
	some value in accepted
	lower(value) == input.claims.pcrs[index]
}
