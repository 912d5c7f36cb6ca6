//! AMD SEV-SNP attester: an extended report from `/dev/sev-guest` (the report
//! and the host-provided certificate table, normally the VCEK), in the
//! guest-components evidence shape `{"attestation_report": .., "cert_chain": [..]}`.

use crate::{Attester, AttesterError};
use kbs_types::Tee;
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::CertTableEntry;
use sev::parser::ByteParser;
use std::fmt::Debug;

/// Access to the SNP guest firmware.
pub trait SnpFirmware: Send + Sync + Debug {
    /// Request an extended report (VMPL 0) carrying `report_data`. Returns the
    /// raw 1184-byte report and the certificate table, if the host provides one.
    fn ext_report(
        &self,
        report_data: [u8; 64],
    ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), String>;
}

/// The real firmware behind `/dev/sev-guest` (via the `sev` crate).
#[derive(Debug, Clone, Copy, Default)]
pub struct SevGuestDevice;

impl SnpFirmware for SevGuestDevice {
    fn ext_report(
        &self,
        report_data: [u8; 64],
    ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), String> {
        let mut fw = sev::firmware::guest::Firmware::open()
            .map_err(|e| format!("cannot open /dev/sev-guest: {e}"))?;
        fw.get_ext_report(None, Some(report_data), Some(0))
            .map_err(|e| format!("SNP_GET_EXT_REPORT failed: {e}"))
    }
}

/// The SNP attester.
#[derive(Debug)]
pub struct SnpAttester<F: SnpFirmware = SevGuestDevice> {
    firmware: F,
}

impl<F: SnpFirmware> SnpAttester<F> {
    pub fn new(firmware: F) -> Self {
        Self { firmware }
    }

    fn report(
        &self,
        report_data: [u8; 64],
    ) -> Result<(AttestationReport, Option<Vec<CertTableEntry>>), AttesterError> {
        let collect = |reason: String| AttesterError::Collect { tee: "snp", reason };
        let (raw, certs) = self.firmware.ext_report(report_data).map_err(collect)?;
        let report = AttestationReport::from_bytes(&raw)
            .map_err(|e| collect(format!("firmware returned an unparsable report: {e}")))?;
        // The firmware must sign what we asked for; anything else is a broken
        // or hostile device layer.
        if report.report_data != report_data {
            return Err(collect(
                "report does not carry the requested report_data".into(),
            ));
        }
        Ok((report, certs))
    }
}

impl<F: SnpFirmware> Attester for SnpAttester<F> {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    fn evidence(&self, report_data: &[u8; 48]) -> Result<serde_json::Value, AttesterError> {
        let mut rd = [0u8; 64];
        rd[..48].copy_from_slice(report_data);
        let (report, certs) = self.report(rd)?;
        Ok(serde_json::json!({
            "attestation_report": report,
            "cert_chain": certs,
        }))
    }

    fn bind_init_data(&self, digest: &[u8]) -> Result<(), AttesterError> {
        let (report, _) = self.report([0u8; 64])?;
        let want = coco_jose::binding::init_data_register::<32>(digest);
        if report.host_data != want {
            return Err(AttesterError::InitDataMismatch {
                expected: hex::encode(want),
                found: hex::encode(report.host_data),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev::firmware::host::CertType;

    const REPORT: &[u8] = include_bytes!("../testdata/report.bin");
    const VCEK: &[u8] = include_bytes!("../testdata/vcek.der");

    /// Returns the captured report, whatever is asked (like a replaying host).
    #[derive(Debug)]
    struct Captured;

    impl SnpFirmware for Captured {
        fn ext_report(
            &self,
            _report_data: [u8; 64],
        ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), String> {
            Ok((
                REPORT.to_vec(),
                Some(vec![CertTableEntry::new(CertType::VCEK, VCEK.to_vec())]),
            ))
        }
    }

    /// The device is absent or fails.
    #[derive(Debug)]
    struct Broken;

    impl SnpFirmware for Broken {
        fn ext_report(
            &self,
            _: [u8; 64],
        ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), String> {
            Err("cannot open /dev/sev-guest: No such file or directory".into())
        }
    }

    fn captured_report_data() -> [u8; 48] {
        REPORT[0x50..0x80].try_into().unwrap()
    }

    #[test]
    fn evidence_has_the_guest_components_shape() {
        let ev = SnpAttester::new(Captured)
            .evidence(&captured_report_data())
            .unwrap();
        let rep = &ev["attestation_report"];
        assert_eq!(rep["version"], 2);
        assert_eq!(rep["report_data"].as_array().unwrap().len(), 64);
        assert_eq!(ev["cert_chain"][0]["cert_type"], "VCEK");
        assert_eq!(
            ev["cert_chain"][0]["data"].as_array().unwrap().len(),
            VCEK.len()
        );
        // The JSON report round-trips to the signed bytes.
        let back: AttestationReport = serde_json::from_value(rep.clone()).unwrap();
        assert_eq!(back.to_bytes().unwrap().as_slice(), REPORT);
    }

    #[test]
    fn a_report_for_other_report_data_is_refused() {
        let e = SnpAttester::new(Captured).evidence(&[7u8; 48]).unwrap_err();
        assert!(
            matches!(e, AttesterError::Collect { tee: "snp", .. }),
            "{e}"
        );
    }

    #[test]
    fn bind_init_data_compares_host_data() {
        // HOST_DATA of the captured report is zero.
        let a = SnpAttester::new(BindOnly);
        a.bind_init_data(&[0u8; 48]).unwrap();
        let e = a.bind_init_data(&[0xab; 32]).unwrap_err();
        assert!(matches!(e, AttesterError::InitDataMismatch { .. }), "{e}");
    }

    /// Answers the zero-report_data request bind_init_data makes, with a
    /// captured report whose REPORT_DATA is rewritten (bind_init_data does not
    /// need a valid signature, only the firmware's HOST_DATA).
    #[derive(Debug)]
    struct BindOnly;

    impl SnpFirmware for BindOnly {
        fn ext_report(
            &self,
            rd: [u8; 64],
        ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), String> {
            let mut r = REPORT.to_vec();
            r[0x50..0x90].copy_from_slice(&rd);
            Ok((r, None))
        }
    }

    #[test]
    fn device_errors_are_collect_errors() {
        let e = SnpAttester::new(Broken).evidence(&[0u8; 48]).unwrap_err();
        assert!(e.to_string().contains("/dev/sev-guest"), "{e}");
    }

    #[test]
    fn real_device_when_present() {
        if !std::path::Path::new("/dev/sev-guest").exists() {
            eprintln!("skipped: no /dev/sev-guest on this machine (not an SNP guest)");
            return;
        }
        let ev = SnpAttester::new(SevGuestDevice)
            .evidence(&[1u8; 48])
            .unwrap();
        assert!(ev["attestation_report"].is_object());
    }
}
