# Default attestation rules for Intel TDX evidence.
#
# Input:  {"tee": "tdx", "claims": <TdxClaims>, "init_data": <object or null>}
# Result: data.policy.status; the engine's base file declares
#         `default status := "contraindicated"`.
#
# Reference values (data.reference, name -> array of strings, lowercase hex):
#   tdx_mrtd          accepted MRTD values (TD firmware). Required.
#   tdx_rtmr_1        accepted RTMR1 values (boot loader, kernel). Required.
#   tdx_rtmr_2        accepted RTMR2 values (kernel command line, initrd). Required.
#   tdx_rtmr_0        accepted RTMR0 values (firmware configuration). Optional.
#   tdx_mr_seam       accepted TDX module measurements. Optional.
#   tdx_tcb_status_warning
#                     TCB statuses that give "warning" instead of
#                     "contraindicated". Optional; default: SWHardeningNeeded,
#                     ConfigurationNeeded, ConfigurationAndSWHardeningNeeded.
#   init_data_digest  accepted initdata digests (see default.rego). Required.
#
# "affirming" needs TCB status UpToDate from Intel's collateral; a quote whose
# TCB was not evaluated (no collateral) is never affirmed. Always required (for
# "warning" too): the TD is not debuggable, and the client sent initdata whose
# digest is bound in MRCONFIGID and registered (the host chooses MRCONFIGID).
package policy

tdx_optional_ok(name, value) if not data.reference[name]

tdx_optional_ok(name, value) if value in data.reference[name]

tdx_measurements_ok if {
	input.claims.mrtd in data.reference.tdx_mrtd
	input.claims.rtmr_1 in data.reference.tdx_rtmr_1
	input.claims.rtmr_2 in data.reference.tdx_rtmr_2
	tdx_optional_ok("tdx_rtmr_0", input.claims.rtmr_0)
	tdx_optional_ok("tdx_mr_seam", input.claims.mr_seam)
}

tdx_base_ok if {
	input.tee == "tdx"
	input.claims.debug == false
	tdx_measurements_ok
	init_data_pinned
}

tdx_default_warning := ["SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"]

tdx_warning_statuses := object.get(data.reference, "tdx_tcb_status_warning", tdx_default_warning)

status := "affirming" if {
	tdx_base_ok
	input.claims.tcb_status == "UpToDate"
}

status := "warning" if {
	tdx_base_ok
	input.claims.tcb_status != "UpToDate"
	input.claims.tcb_status in tdx_warning_statuses
}
