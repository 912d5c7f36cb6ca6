# Example resource policy: a secret for exactly one workload.
#
# The default attestation policy affirms evidence bound to any *registered*
# initdata (reference value init_data_digest), so every registered workload on
# trustworthy hardware passes it. This policy pins one secret further:
# default/app/key is released only to affirming evidence whose initdata is the
# app's own (its agent policy, KBS address, image settings), so another
# registered workload cannot read it. Every other resource: the default rules
# (affirming, never the sample TEE).
#
# Input: the attestation token's claims (see default.rego); the initdata digest
# is input.init_data.digest, lowercase hex of the whole digest of the TOML.
# Data:  data["resource-path"] = ["<repo>", "<type>", "<tag>"]
# Result: data.policy.allow
#
# To use it, set app_init_data_digest to what
#   kbs-client config ... register-initdata app-initdata.toml
# prints, then upload it with `kbs-client config ... set-resource-policy`.
# As shipped, the placeholder matches no digest: the app key is released to
# nobody (fails closed).
package policy

# Lowercase hex of the app's initdata digest.
app_init_data_digest := "REPLACE-WITH-THE-APP-INITDATA-DIGEST"

default allow := false

app_key if data["resource-path"] == ["default", "app", "key"]

affirmed if {
	input.submods.cpu0["ear.status"] == "affirming"
	input.tee != "sample"
}

allow if {
	app_key
	affirmed
	input.init_data.digest == app_init_data_digest
}

allow if {
	not app_key
	affirmed
}
