//! `/dev/tdx_guest` ioctl (Linux UAPI `include/uapi/linux/tdx-guest.h`): the only
//! unsafe code of the attester.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Length of REPORTDATA and of a TDREPORT.
pub const TDX_REPORTDATA_LEN: usize = 64;
pub const TDX_REPORT_LEN: usize = 1024;

/// `struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; }`
#[repr(C)]
pub struct TdxReportReq {
    pub reportdata: [u8; TDX_REPORTDATA_LEN],
    pub tdreport: [u8; TDX_REPORT_LEN],
}

// TDX_CMD_GET_REPORT0 = _IOWR('T', 1, struct tdx_report_req)
nix::ioctl_readwrite!(tdx_cmd_get_report0, b'T', 1, TdxReportReq);

/// Get a TDREPORT carrying `report_data` from the TDX module.
pub fn get_report0(dev: &Path, report_data: &[u8; 64]) -> std::io::Result<[u8; TDX_REPORT_LEN]> {
    let f = OpenOptions::new().read(true).write(true).open(dev)?;
    let mut req = Box::new(TdxReportReq {
        reportdata: *report_data,
        tdreport: [0u8; TDX_REPORT_LEN],
    });
    // SAFETY: `f` is an open descriptor of the tdx_guest device, which defines
    // TDX_CMD_GET_REPORT0 with exactly this `#[repr(C)]` struct (64 + 1024 bytes);
    // `req` is a valid, exclusively borrowed allocation that outlives the call,
    // and the kernel writes only within it.
    unsafe { tdx_cmd_get_report0(f.as_raw_fd(), &mut *req) }.map_err(std::io::Error::from)?;
    Ok(req.tdreport)
}
