# Default resource policy.
#
# Input: the attestation token's claims, e.g.
#   input.tee                                    "snp" | "tdx" | "tpm" | "sample"
#   input.submods.cpu0["ear.status"]             "affirming" | "warning" | "contraindicated"
#   input.submods.cpu0["ear.veraison.annotated-evidence"][<tee>]   verified claims
#   input["init_data"]                           {"digest", "algorithm"} of the initdata, if any
# Data:  data["resource-path"] = ["<repo>", "<type>", "<tag>"], data.plugin = "resource",
#        data.query = {query parameters} (the shape Trustee's KBS gives)
# Result: data.policy.allow (boolean; anything else denies)
package policy

default allow := false

# Release only to evidence the attestation policy fully affirmed, and never to
# the sample TEE, whatever an attestation policy says about it.
allow if {
	input.submods.cpu0["ear.status"] == "affirming"
	input.tee != "sample"
}
