use super::*;
use std::path::PathBuf;
use std::sync::Mutex;

const QUOTE: &[u8] = include_bytes!("../../testdata/quote-v4-with-collateral.dat");
const CCEL: &[u8] = include_bytes!("../../testdata/CCEL_data");

/// Replays captured hardware output and records what it was asked.
#[derive(Debug, Default)]
struct Captured {
    tdreport_mrconfigid: Option<[u8; 48]>,
    asked: Mutex<Vec<[u8; 64]>>,
    extended: Mutex<Vec<(u8, [u8; 48])>>,
    no_ccel: bool,
}

impl TdxPlatform for Captured {
    fn quote(&self, report_data: &[u8; 64]) -> std::io::Result<Vec<u8>> {
        self.asked.lock().unwrap().push(*report_data);
        Ok(QUOTE.to_vec())
    }
    fn tdreport(&self, _: &[u8; 64]) -> std::io::Result<[u8; 1024]> {
        match self.tdreport_mrconfigid {
            Some(m) => {
                let mut r = [0u8; 1024];
                r[TDREPORT_MRCONFIGID..TDREPORT_MRCONFIGID + 48].copy_from_slice(&m);
                Ok(r)
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }
    fn ccel(&self) -> std::io::Result<Option<Vec<u8>>> {
        Ok((!self.no_ccel).then(|| CCEL.to_vec()))
    }
    fn extend_rtmr(&self, index: u8, digest: &[u8; 48]) -> std::io::Result<()> {
        self.extended.lock().unwrap().push((index, *digest));
        Ok(())
    }
}

#[test]
fn evidence_carries_quote_and_ccel_and_pads_report_data() {
    let a = TdxAttester::new(Captured::default());
    let ev = a.evidence(&[0x11; 48]).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(ev["quote"].as_str().unwrap()).unwrap(), QUOTE);
    assert_eq!(
        b64.decode(ev["cc_eventlog"].as_str().unwrap()).unwrap(),
        CCEL
    );
    let asked = a.platform.asked.lock().unwrap()[0];
    assert_eq!(&asked[..48], &[0x11; 48]);
    assert_eq!(&asked[48..], &[0u8; 16]);
}

#[test]
fn evidence_without_ccel_omits_it() {
    let a = TdxAttester::new(Captured {
        no_ccel: true,
        ..Default::default()
    });
    let ev = a.evidence(&[0; 48]).unwrap();
    assert!(ev.get("cc_eventlog").is_none());
}

#[test]
fn bind_init_data_reads_mrconfigid_from_the_tdreport() {
    let mut m = [0u8; 48];
    m[..32].copy_from_slice(&[0x5a; 32]);
    let a = TdxAttester::new(Captured {
        tdreport_mrconfigid: Some(m),
        ..Default::default()
    });
    a.bind_init_data(&[0x5a; 32]).unwrap();
    let e = a.bind_init_data(&[0x5b; 32]).unwrap_err();
    assert!(matches!(e, AttesterError::InitDataMismatch { .. }), "{e}");
    assert!(
        a.platform.asked.lock().unwrap().is_empty(),
        "no quote needed"
    );
}

#[test]
fn bind_init_data_falls_back_to_the_quote() {
    let a = TdxAttester::new(Captured::default());
    let q_mrconfigid = &QUOTE[48 + BODY_MRCONFIGID..48 + BODY_MRCONFIGID + 48];
    a.bind_init_data(q_mrconfigid).unwrap();
    let e = a.bind_init_data(&[0xff; 48]).unwrap_err();
    assert!(matches!(e, AttesterError::InitDataMismatch { .. }), "{e}");
}

#[test]
fn runtime_measurements_go_to_rtmr_2_or_3_only() {
    let a = TdxAttester::new(Captured::default());
    a.extend_runtime_measurement(3, &[1; 48]).unwrap();
    assert!(a.extend_runtime_measurement(0, &[1; 48]).is_err());
    assert_eq!(*a.platform.extended.lock().unwrap(), vec![(3, [1u8; 48])]);
}

#[test]
fn missing_interfaces_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("no-tdx-{}", std::process::id()));
    let p = LinuxTdx {
        tsm_report_dir: dir.join("tsm/report"),
        device: dir.join("tdx_guest"),
        ccel: dir.join("CCEL"),
        measurements: dir.join("measurements"),
    };
    let a = TdxAttester::new(p);
    let e = a.evidence(&[0; 48]).unwrap_err();
    assert!(e.to_string().contains("configfs-tsm"), "{e}");
    assert!(a.bind_init_data(&[0; 48]).is_err());
}

#[test]
fn real_device_when_present() {
    if !Path::new("/dev/tdx_guest").exists() {
        eprintln!("skipped: no /dev/tdx_guest on this machine (not a TDX guest)");
        return;
    }
    let r = LinuxTdx::default().tdreport(&[7; 64]).unwrap();
    assert_eq!(&r[128..192], &[7u8; 64], "REPORTDATA in REPORTMACSTRUCT");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tdx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn linux_paths_read_ccel_and_write_rtmr_extensions() {
    let d = scratch("sysfs");
    std::fs::create_dir_all(d.join("measurements")).unwrap();
    std::fs::write(d.join("CCEL"), CCEL).unwrap();
    let p = LinuxTdx {
        tsm_report_dir: d.join("tsm/report"),
        device: d.join("tdx_guest"),
        ccel: d.join("CCEL"),
        measurements: d.join("measurements"),
    };
    assert_eq!(p.ccel().unwrap().as_deref(), Some(CCEL));
    TdxAttester::new(p.clone())
        .extend_runtime_measurement(2, &[0xee; 48])
        .unwrap();
    assert_eq!(
        std::fs::read(d.join("measurements/rtmr2:sha384")).unwrap(),
        [0xee; 48]
    );
    std::fs::remove_file(d.join("CCEL")).unwrap();
    assert_eq!(p.ccel().unwrap(), None);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn configfs_entry_is_removed_when_the_quote_fails() {
    // A plain directory stands in for configfs: the entry gets created, but no
    // provider appears in it, so the quote fails; the entry must not be left.
    let d = scratch("tsm");
    let p = LinuxTdx {
        tsm_report_dir: d.clone(),
        ..LinuxTdx::default()
    };
    assert!(p.quote(&[0; 64]).is_err());
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}
