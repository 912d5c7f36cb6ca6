//! Evidence assembly and initdata binding against a software TPM double; the
//! real TPM (swtpm) is exercised in `tests/swtpm.rs`.

use super::*;
use std::sync::Mutex;

/// Software PCR bank with a quote that reports the digest of the PCRs at quote
/// time. `extend_during_quotes` PCR-3 extensions happen right after quotes, as
/// if another process measured something between quote and read.
#[derive(Debug, Default)]
struct SoftTpm {
    pcrs: Mutex<[[u8; 32]; 24]>,
    extend_during_quotes: Mutex<usize>,
    qualifying: Mutex<Vec<Vec<u8>>>,
    extends: Mutex<Vec<(u8, [u8; 32])>>,
}

impl TpmDevice for SoftTpm {
    fn quote(&self, qualifying_data: &[u8], pcrs: &[u8]) -> Result<RawQuote, TpmDeviceError> {
        self.qualifying
            .lock()
            .unwrap()
            .push(qualifying_data.to_vec());
        let mut bank = self.pcrs.lock().unwrap();
        let mut h = Sha256::new();
        pcrs.iter().for_each(|p| h.update(bank[usize::from(*p)]));
        let mut left = self.extend_during_quotes.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            bank[3] = extend_sha256(&bank[3], &[9; 32]);
        }
        Ok(RawQuote {
            attest: [b"attest:".as_slice(), qualifying_data].concat(),
            signature: b"signature".to_vec(),
            pcr_digest: h.finalize().to_vec(),
            ak_spki_der: b"spki".to_vec(),
            ak_tpm_public: b"tpmt".to_vec(),
            ak_parent_qualified_name: Some(vec![0x40, 0, 0, 0x0b]),
        })
    }

    fn read_pcrs(&self, pcrs: &[u8]) -> Result<Vec<[u8; 32]>, TpmDeviceError> {
        let bank = self.pcrs.lock().unwrap();
        Ok(pcrs.iter().map(|p| bank[usize::from(*p)]).collect())
    }

    fn extend_pcr(&self, pcr: u8, digest: &[u8; 32]) -> Result<(), TpmDeviceError> {
        self.extends.lock().unwrap().push((pcr, *digest));
        let mut bank = self.pcrs.lock().unwrap();
        bank[usize::from(pcr)] = extend_sha256(&bank[usize::from(pcr)], digest);
        Ok(())
    }
}

/// Shares one SoftTpm between the attester and the test.
#[derive(Debug, Clone)]
struct Shared(std::sync::Arc<SoftTpm>);

impl TpmDevice for Shared {
    fn quote(&self, q: &[u8], p: &[u8]) -> Result<RawQuote, TpmDeviceError> {
        self.0.quote(q, p)
    }
    fn read_pcrs(&self, p: &[u8]) -> Result<Vec<[u8; 32]>, TpmDeviceError> {
        self.0.read_pcrs(p)
    }
    fn extend_pcr(&self, p: u8, d: &[u8; 32]) -> Result<(), TpmDeviceError> {
        self.0.extend_pcr(p, d)
    }
}

fn attester(config: TpmAttesterConfig) -> (TpmAttester, std::sync::Arc<SoftTpm>) {
    let tpm = std::sync::Arc::new(SoftTpm::default());
    let a = TpmAttester::new(Box::new(Shared(tpm.clone())), config).unwrap();
    (a, tpm)
}

fn no_log() -> TpmAttesterConfig {
    TpmAttesterConfig {
        event_log: None,
        ..Default::default()
    }
}

#[test]
fn evidence_has_trustee_shape_and_first_32_bytes_of_report_data() {
    let (a, tpm) = attester(no_log());
    tpm.pcrs.lock().unwrap()[0] = [0xaa; 32];
    let mut rd = [0u8; 48];
    rd.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let ev = a.evidence(&rd).unwrap();
    assert_eq!(
        tpm.qualifying.lock().unwrap().as_slice(),
        &[rd[..32].to_vec()]
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(ev["ak_public"], b64.encode(b"spki"));
    assert_eq!(ev["ak_tpm_public"], b64.encode(b"tpmt"));
    assert_eq!(
        ev["ak_parent_qualified_name"],
        b64.encode([0x40, 0, 0, 0x0b])
    );
    assert_eq!(ev["tpm_quote"]["signature"], b64.encode(b"signature"));
    assert_eq!(
        b64.decode(ev["tpm_quote"]["message"].as_str().unwrap())
            .unwrap(),
        [b"attest:".as_slice(), &rd[..32]].concat()
    );
    let pcrs = ev["tpm_quote"]["pcrs"].as_array().unwrap();
    assert_eq!(pcrs.len(), 16);
    assert_eq!(pcrs[0], "aa".repeat(32));
    assert_eq!(pcrs[1], "00".repeat(32));
    assert!(ev.get("eventlog").is_none());
}

#[test]
fn trustee_layout_pads_all_48_bytes_to_64() {
    let (a, tpm) = attester(TpmAttesterConfig {
        qualifying_data: QualifyingData::Padded64,
        ..no_log()
    });
    a.evidence(&[0xee; 48]).unwrap();
    let q = tpm.qualifying.lock().unwrap()[0].clone();
    assert_eq!(q.len(), 64);
    assert_eq!(&q[..48], &[0xee; 48]);
    assert_eq!(&q[48..], &[0; 16]);
}

#[test]
fn pcr_change_during_quote_is_retried_then_given_up() {
    let (a, tpm) = attester(no_log());
    *tpm.extend_during_quotes.lock().unwrap() = 1;
    let ev = a.evidence(&[1; 48]).unwrap();
    assert_eq!(tpm.qualifying.lock().unwrap().len(), 2);
    // The PCR 3 in the evidence is the value after the extension (quoted the 2nd time).
    assert_eq!(
        ev["tpm_quote"]["pcrs"][3],
        hex::encode(tpm.pcrs.lock().unwrap()[3])
    );

    *tpm.extend_during_quotes.lock().unwrap() = 100;
    let err = a.evidence(&[1; 48]).unwrap_err();
    assert!(matches!(err, AttesterError::Collect { .. }), "{err}");
}

#[test]
fn event_log_is_attached_when_present() {
    let dir = std::env::temp_dir().join(format!("tpm-evlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("binary_bios_measurements");
    std::fs::write(&path, b"\x00\x01event log").unwrap();
    let (a, _) = attester(TpmAttesterConfig {
        event_log: Some(path),
        pcrs: vec![8, 0, 8],
        ..Default::default()
    });
    let ev = a.evidence(&[0; 48]).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(ev["eventlog"], b64.encode(b"\x00\x01event log"));
    assert_eq!(ev["tpm_quote"]["pcrs"].as_array().unwrap().len(), 2);
    let (a, _) = attester(TpmAttesterConfig {
        event_log: Some(dir.join("missing")),
        ..Default::default()
    });
    assert!(a.evidence(&[0; 48]).unwrap().get("eventlog").is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_pcr_selection_is_refused() {
    let tpm = SoftTpm::default();
    let cfg = TpmAttesterConfig {
        pcrs: vec![0, 24],
        ..no_log()
    };
    assert!(TpmAttester::new(Box::new(tpm), cfg).is_err());
}

#[test]
fn bind_init_data_extends_pcr8_once() {
    let (a, tpm) = attester(no_log());
    let digest = [0x5a; 32];
    a.bind_init_data(&digest).unwrap();
    let mut zero_then = [0u8; 64];
    zero_then[32..].copy_from_slice(&digest);
    let want: [u8; 32] = Sha256::digest(zero_then).into();
    assert_eq!(tpm.pcrs.lock().unwrap()[8], want);
    // Binding again (attester restart) is accepted and does not extend again.
    a.bind_init_data(&digest).unwrap();
    assert_eq!(tpm.extends.lock().unwrap().len(), 1);
    // Another digest: refused, PCR 8 left alone.
    let err = a.bind_init_data(&[0x5b; 32]).unwrap_err();
    assert!(
        matches!(err, AttesterError::InitDataMismatch { .. }),
        "{err}"
    );
    assert_eq!(tpm.pcrs.lock().unwrap()[8], want);
}

#[test]
fn longer_initdata_digests_are_truncated_to_the_bank() {
    let (a, tpm) = attester(no_log());
    let digest = [0x11; 48]; // sha384 initdata
    a.bind_init_data(&digest).unwrap();
    assert_eq!(tpm.extends.lock().unwrap()[0], (8, [0x11; 32]));
}
